#!/bin/sh
# The cluster-cache benchmark, this checkout side by side with a reference revision (default:
# where this branch left main) in one run: builds the reference's release binary into its own
# target directory (reusing a copy of this checkout's compiled dependencies when there is one),
# then runs `cargo bench --bench cache_memory` with STSGUARD_REFERENCE pointing at it.
#   bench/cache-memory.sh [REVISION]
set -eu
root=$(git rev-parse --show-toplevel)
rev=${1:-$(git -C "$root" merge-base HEAD main)}
ref=$root/target/reference
rm -rf "$ref/src"
mkdir -p "$ref/src" "$ref/target"
git -C "$root" archive "$rev" | tar -x -C "$ref/src"
if [ ! -d "$ref/target/release" ] && [ -d "$root/target/release" ]; then
    cp -a "$root/target/release" "$ref/target/"
fi
(cd "$ref/src" && CARGO_TARGET_DIR="$ref/target" cargo build --release --locked --bin stsguard)
cd "$root"
STSGUARD_REFERENCE="$ref/target/release/stsguard" cargo bench --bench cache_memory

#!/usr/bin/env bash
# End-to-end at scale: `stsguard audit` (release build) over one file of 100,000 documents
# (50,000 StatefulSets, each with its headless governing Service, in 50 namespaces: the
# documents of bench/audit-10k.sh, ten times over), side by side with a reference binary in the
# same run. Prints the wall time and peak RSS of each run, and checks that both binaries print
# the same report.
#
# Usage: [FORMATS="text json sarif"] bench/audit-100k.sh REFERENCE_BINARY [runs] [documents]
#   REFERENCE_BINARY  e.g. the release binary built from main:
#                     git worktree add /tmp/base main && (cd /tmp/base && cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
reference=${1:?usage: bench/audit-100k.sh REFERENCE_BINARY [runs] [documents]}
runs=${2:-3}
documents=${3:-100000}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
input="$work/input.yaml"
python3 bench/audit-input.py "$input" "$((documents / 2))"
echo "input: $(wc -c < "$input") bytes, $(grep -c '^kind:' "$input") documents; $(nproc) cores"
for format in ${FORMATS:-text json sarif}; do
  "$reference" audit -f "$input" -o "$format" > "$work/reference.$format" || [ $? -eq 1 ]
  target/release/stsguard audit -f "$input" -o "$format" > "$work/this.$format" || [ $? -eq 1 ]
  if cmp -s "$work/reference.$format" "$work/this.$format"; then
    echo "$format: same report ($(wc -c < "$work/this.$format") bytes)"
  else
    echo "$format: the reports differ" >&2
    exit 1
  fi
  for _ in $(seq "$runs"); do
    for binary in "$reference" target/release/stsguard; do
      /usr/bin/time -f "$format $binary: %e s wall, %U s user + %S s sys, %M KiB max RSS" \
        "$binary" audit -f "$input" -o "$format" > /dev/null || [ $? -eq 1 ]
    done
  done
done

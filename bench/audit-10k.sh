#!/usr/bin/env bash
# End-to-end: `stsguard audit` (release build) over one file of 10,000 documents (5,000
# StatefulSets, each with its headless governing Service, in 50 namespaces). Prints the wall time
# and peak RSS of each run. Usage: bench/audit-10k.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 bench/audit-input.py "$work/10k.yaml" 5000
echo "input: $(wc -c < "$work/10k.yaml") bytes, $(grep -c '^kind:' "$work/10k.yaml") documents; $(nproc) cores"
for format in text json sarif; do
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "$format: %e s wall, %M KiB max RSS" \
      target/release/stsguard audit -f "$work/10k.yaml" -o "$format" > /dev/null || [ $? -eq 1 ]
  done
done

#!/usr/bin/env bash
# User-space instructions per review, counted by valgrind's callgrind: a figure that does not
# drift with what else the machine runs, for comparing two builds (or stsguard and the floor)
# where CPU time would need many alternating rounds to tell 5 % apart. It leaves out the kernel's
# share (TCP, the log's writes), which bench/load.py's CPU figures include.
#
# Each server runs twice under callgrind: once answering nothing (start-up and shutdown), once
# answering N reviews over 4 keep-alive HTTP/1.1 connections; the difference over N is printed.
#
# Usage: bench/instructions.sh [FIXTURE] [N] [BINARY...]
#   FIXTURE  a file in tests/fixtures/admission (default: the Service CREATE review)
#   N        reviews (default 3000)
#   BINARY   stsguard binaries to measure (default target/release/stsguard); the floor
#            (target/release/examples/floor) is always measured too.
# Needs valgrind and oha; build first: cargo build --release --bin stsguard --example floor
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=tests/fixtures/admission/${1:-validate-Service-CREATE-cap-cache-1.json}
reviews=${2:-3000}
shift $(($# > 2 ? 2 : $#))
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/stsguard)
path=/validate
case $(basename "$fixture") in mutate-*) path=/mutate ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/stsguard certs generate --out "$work" --dns localhost --ip 127.0.0.1 > /dev/null

# Instructions of one server run under callgrind that answers `$2` reviews.
count() {
  local binary=$1 n=$2 port=18571 probe=18572 pid
  local args=(serve --no-cluster --addr 127.0.0.1:$port --probe-addr 127.0.0.1:$probe
    --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" --log-format json)
  [ "$(basename "$binary")" = floor ] &&
    args=(127.0.0.1:$port 127.0.0.1:$probe "$work/tls.crt" "$work/tls.key")
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$binary" "${args[@]}" \
    > /dev/null 2> "$work/server.log" &
  pid=$!
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$probe/readyz" && break
    sleep 0.2
  done
  if [ "$n" -gt 0 ]; then
    oha --no-tui --output-format json --cacert "$work/ca.crt" -m POST \
      -H 'content-type: application/json' -D "$fixture" -n "$n" -c 4 \
      "https://localhost:$port$path" > "$work/oha.json"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$work/out"
}

echo "$(basename "$fixture"), $reviews reviews, user-space instructions per review:"
for binary in target/release/examples/floor "${binaries[@]}"; do
  idle=$(count "$binary" 0)
  busy=$(count "$binary" "$reviews")
  echo "  $binary: $(((busy - idle) / reviews))"
done

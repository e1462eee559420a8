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
python3 - "$input" "$((documents / 2))" <<'PY'
import sys
pair = """apiVersion: v1
kind: Service
metadata:
  name: db-{i}
  namespace: team-{ns}
  labels: {{app.kubernetes.io/name: db-{i}}}
spec:
  clusterIP: None
  selector: {{app.kubernetes.io/name: db-{i}}}
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db-{i}
  namespace: team-{ns}
spec:
  serviceName: db-{i}
  replicas: 3
  selector: {{matchLabels: {{app.kubernetes.io/name: db-{i}}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: db-{i}}}}}
    spec:
      containers:
        - name: postgres
          image: postgres:17
          ports: [{{name: pg, containerPort: 5432}}]
          readinessProbe: {{tcpSocket: {{port: 5432}}}}
          volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
        - name: exporter
          image: exporter:1
  volumeClaimTemplates:
    - metadata: {{name: data}}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 10Gi}}}}
"""
with open(sys.argv[1], "w") as out:
    out.write("---\n".join(pair.format(i=i, ns=i % 50) for i in range(int(sys.argv[2]))))
PY
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

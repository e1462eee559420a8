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
python3 - "$work/10k.yaml" <<'PY'
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
    out.write("---\n".join(pair.format(i=i, ns=i % 50) for i in range(5000)))
PY
echo "input: $(wc -c < "$work/10k.yaml") bytes, $(grep -c '^kind:' "$work/10k.yaml") documents; $(nproc) cores"
for format in text json sarif; do
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "$format: %e s wall, %M KiB max RSS" \
      target/release/stsguard audit -f "$work/10k.yaml" -o "$format" > /dev/null || [ $? -eq 1 ]
  done
done

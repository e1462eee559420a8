#!/usr/bin/env python3
"""The audit benchmarks' input: PAIRS StatefulSets, each with its headless governing Service, in
50 namespaces, as one multi-document YAML file. Usage: bench/audit-input.py OUT PAIRS"""
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

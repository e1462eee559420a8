//! Auditing 10,000 documents (5,000 StatefulSets, each with its governing Service): reading the
//! YAML, then the admission chain and the rules, and both streamed as the command line does.
//! `cargo bench --bench audit`.

use criterion::{Criterion, criterion_group, criterion_main};
use stsguard::{
    audit::{audit, audit_inputs},
    manifest,
    policy::Policy,
};

/// One StatefulSet and its headless Service, numbered so that every object is distinct.
fn pair(i: usize) -> String {
    format!(
        "apiVersion: v1
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
",
        ns = i % 50
    )
}

pub fn corpus(pairs: usize) -> String {
    (0..pairs).map(pair).collect::<Vec<_>>().join("---\n")
}

fn bench(c: &mut Criterion) {
    let text = corpus(5_000);
    let policy = Policy::builtin();
    let today = stsguard::time::today();
    let mut group = c.benchmark_group("audit 10k documents");
    group.sample_size(10);
    group.bench_function("read YAML", |b| {
        b.iter(|| {
            let mut loaded = manifest::Loaded::default();
            manifest::parse_into(&mut loaded, "bench.yaml", &text, false);
            assert_eq!(loaded.documents.len(), 10_000);
            loaded
        })
    });
    let mut loaded = manifest::Loaded::default();
    manifest::parse_into(&mut loaded, "bench.yaml", &text, false);
    group.bench_function("admission chain and rules", |b| {
        b.iter(|| {
            let report = audit(&loaded, &policy, "default", today);
            assert_eq!(report.results.len(), 10_000);
            report
        })
    });
    group.bench_function("read YAML + audit", |b| {
        b.iter(|| {
            let mut loaded = manifest::Loaded::default();
            manifest::parse_into(&mut loaded, "bench.yaml", &text, false);
            audit(&loaded, &policy, "default", today)
        })
    });
    // What `stsguard audit -f` does: each document parsed and kept compactly as it is read.
    group.bench_function("streamed (read YAML + audit)", |b| {
        b.iter(|| {
            let input = manifest::Input {
                file: "bench.yaml".to_owned(),
                text: text.clone(),
                json: false,
            };
            let (report, documents) =
                audit_inputs(vec![input], vec![], vec![], &policy, "default", today);
            assert_eq!(documents, 10_000);
            report
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The fake API server's writes answer as the real one does, through the real kube client: the
//! leader election, certificate and report tests rely on it being as strict.

mod support;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::apiserver::{FakeApiServer, Kind};

fn code(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn writes_are_checked_as_the_real_api_server_checks_them() {
    let fake = FakeApiServer::start().await;
    let client = Client::try_from(fake.config()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ns");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tls"}, "data": {"a": "YQ=="}
    }))
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(
        code(
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );

    // A replace from a stale read loses: optimistic concurrency.
    let mut first = created.clone();
    first.data = None;
    secrets
        .replace("tls", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_eq!(
        code(
            secrets
                .replace("tls", &PostParams::default(), &created)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );

    // Names are DNS subdomains.
    let mut bad = secret.clone();
    bad.metadata.name = Some("Not_A_Name".into());
    assert_eq!(
        code(
            secrets
                .create(&PostParams::default(), &bad)
                .await
                .unwrap_err()
        ),
        (422, "Invalid".into())
    );

    // etcd's 1.5 MiB limit on one object.
    let mut big = secret.clone();
    big.metadata.name = Some("big".into());
    big.string_data = Some([("x".to_owned(), "y".repeat(1600 * 1024))].into());
    assert_eq!(
        code(
            secrets
                .create(&PostParams::default(), &big)
                .await
                .unwrap_err()
        ),
        (413, "RequestEntityTooLarge".into())
    );
}

#[tokio::test]
async fn server_side_apply_tracks_field_managers_and_their_conflicts() {
    let fake = FakeApiServer::start().await;
    let client = Client::try_from(fake.config()).unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "ns");
    let holder = |who: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "spec": {"holderIdentity": who, "leaseDurationSeconds": 15}})
    };
    leases
        .patch(
            "l",
            &PatchParams::apply("one"),
            &Patch::Apply(holder("one")),
        )
        .await
        .unwrap();
    // Another manager changing a field the first one owns: conflict, unless forced.
    let (status, reason) = code(
        leases
            .patch(
                "l",
                &PatchParams::apply("two"),
                &Patch::Apply(holder("two")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (409, "Conflict"));
    // The same value is shared ownership, not a conflict.
    leases
        .patch(
            "l",
            &PatchParams::apply("two"),
            &Patch::Apply(holder("one")),
        )
        .await
        .unwrap();
    leases
        .patch(
            "l",
            &PatchParams::apply("two").force(),
            &Patch::Apply(holder("two")),
        )
        .await
        .unwrap();
    let lease = fake.get(Kind::Lease, "ns", "l").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "two");
    let managers: Vec<&str> = lease["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"two"), "{managers:?}");

    // A field a manager stops applying stays while another manager owns it, and goes when the
    // last one stops applying it.
    leases
        .patch(
            "l",
            &PatchParams::apply("two"),
            &Patch::Apply(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "spec": {"holderIdentity": "two"}}),
            ),
        )
        .await
        .unwrap();
    let lease = fake.get(Kind::Lease, "ns", "l").unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15, "{lease}");
    leases
        .patch(
            "l",
            &PatchParams::apply("one"),
            &Patch::Apply(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "spec": {"leaseTransitions": 1}}),
            ),
        )
        .await
        .unwrap();
    let lease = fake.get(Kind::Lease, "ns", "l").unwrap();
    assert!(
        lease["spec"].get("leaseDurationSeconds").is_none(),
        "{lease}"
    );
    assert_eq!(lease["spec"]["holderIdentity"], "two");

    // Apply needs a field manager.
    let params = PatchParams {
        field_manager: None,
        ..PatchParams::default()
    };
    assert_eq!(
        code(
            leases
                .patch("l", &params, &Patch::Apply(holder("x")))
                .await
                .unwrap_err()
        )
        .0,
        422
    );
}

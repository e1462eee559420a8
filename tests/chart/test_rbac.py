"""Whether the chart's RBAC lets the leader write what it writes: the backstop's admission
policies and bindings, as `stsguard policy export` generates them for the chart's scope, are
put through the checks a real API server makes, with an authorizer that follows Kubernetes'
RBAC (ClusterRoleBindings everywhere, RoleBindings only in their own namespace).

The checks beyond the verb on the object itself come from the Kubernetes source
(pkg/registry/admissionregistration/*/authz.go): a policy with a paramKind may be created only
by a user who may `get` that kind with name "*" in namespace "*", a binding with a paramRef
only by one who may `get` it in the paramRef's namespace. A fake API server does not make them;
a real one answers 422 `spec.paramKind: Forbidden`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modes import CHART_DIR, MODES, NAMESPACE, REPO, render_files, split_documents, values_for  # noqa: E402

BINARY = REPO / "target" / "debug" / "stsguard"

# The resources of the kinds the leader writes or names as params (kind -> plural).
RESOURCES = {
    "EndpointSlice": "endpointslices",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
}


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def objects(chart: Any, mode: str) -> list[dict[str, Any]]:
    files = render_files(chart, values_for(mode))
    return [
        yaml.safe_load(doc)
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in split_documents(text)
    ]


class Rbac:
    """The RBAC authorizer over a set of objects, for one ServiceAccount."""

    def __init__(self, objects: list[dict[str, Any]], namespace: str, account: str) -> None:
        self.objects = objects
        self.subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}

    def _role(self, ref: dict[str, Any], namespace: str | None) -> dict[str, Any] | None:
        for obj in self.objects:
            if obj["kind"] == ref["kind"] and obj["metadata"]["name"] == ref["name"]:
                if ref["kind"] == "ClusterRole" or obj["metadata"].get("namespace") == namespace:
                    return obj
        return None

    def _rules(self, namespace: str) -> list[dict[str, Any]]:
        rules = []
        for obj in self.objects:
            kind = obj["kind"]
            bound_here = kind == "ClusterRoleBinding" or (
                # RBAC lists the RoleBindings of the request's namespace: none for "" or "*".
                kind == "RoleBinding"
                and namespace not in ("", "*")
                and obj["metadata"].get("namespace") == namespace
            )
            if not bound_here or self.subject not in obj.get("subjects", []):
                continue
            role = self._role(obj["roleRef"], obj["metadata"].get("namespace"))
            if role is not None:
                rules.extend(role.get("rules", []))
        return rules

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        def has(values: list[str], value: str) -> bool:
            return "*" in values or value in values

        return any(
            has(rule["verbs"], verb)
            and has(rule["apiGroups"], group)
            and has(rule["resources"], resource)
            and (not rule.get("resourceNames") or name in rule["resourceNames"])
            for rule in self._rules(namespace)
        )


def service_account(objs: list[dict[str, Any]]) -> str:
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["serviceAccountName"]


def backstop_scope(objs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    for obj in objs:
        if obj["kind"] == "ConfigMap" and "backstop.yaml" in obj.get("data", {}):
            return obj["metadata"]["name"], yaml.safe_load(obj["data"]["backstop.yaml"])
    return None


def exported(name: str, service: dict[str, str], fmt: str) -> list[dict[str, Any]]:
    assert BINARY.exists(), f"{BINARY} is missing: run `cargo build` first"
    done = subprocess.run(
        [
            str(BINARY),
            "policy",
            "export",
            "--format",
            fmt,
            "--name",
            name,
            "--webhook-service",
            f"{service['namespace']}/{service['name']}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def denied_writes(rbac: Rbac, obj: dict[str, Any], generated: list[dict[str, Any]]) -> list[str]:
    """What the API server would refuse the leader when it applies, reads or removes `obj`."""
    group, resource = group_of(obj["apiVersion"]), RESOURCES[obj["kind"]]
    name = obj["metadata"]["name"]
    # Server-side apply is a patch, and a create when the object is new (authorized with its
    # name); the leader reads it first and deletes it when the backstop is switched off.
    checks = [(verb, group, resource, "", name) for verb in ("get", "create", "patch", "delete")]
    spec = obj["spec"]
    if "paramKind" in spec:
        kind = spec["paramKind"]
        checks.append(("get", group_of(kind["apiVersion"]), RESOURCES[kind["kind"]], "*", "*"))
    if "paramRef" in spec:
        # The binding's check reads the paramKind of the policy it binds.
        policy = next(
            o for o in generated
            if not o["kind"].endswith("Binding") and o["metadata"]["name"] == spec["policyName"]
        )
        kind = policy["spec"]["paramKind"]
        ref = spec["paramRef"]
        checks.append(
            (
                "get",
                group_of(kind["apiVersion"]),
                RESOURCES[kind["kind"]],
                ref["namespace"],
                ref.get("name", ""),
            )
        )
    return [f"{obj['kind']} {name}: {c}" for c in checks if not rbac.allows(*c)]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_leader_may_write_the_backstop_it_generates(chart, mode):
    objs = objects(chart, mode)
    rbac = Rbac(objs, NAMESPACE, service_account(objs))
    scope = backstop_scope(objs)
    if scope is None:
        # No backstop (off, or webhook.url): no cluster-wide read of EndpointSlices either.
        assert not rbac.allows("get", "discovery.k8s.io", "endpointslices", "*", "*"), mode
        return
    name, spec = scope
    generated = exported(name, spec["webhookService"], "vap") + exported(
        name, spec["webhookService"], "map"
    )
    kinds = sorted({o["kind"] for o in generated})
    assert kinds == sorted(RESOURCES.keys() - {"EndpointSlice"}), kinds
    denied = [d for obj in generated for d in denied_writes(rbac, obj, generated)]
    assert denied == [], denied


def test_the_authorizer_refuses_what_rbac_refuses():
    """The emulation itself: a Role grants nothing outside its namespace, so not the "*" a
    policy's paramKind check asks for; a ClusterRole does; resourceNames bind."""
    sa = {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}
    rule = {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get"]}
    role = {"kind": "Role", "metadata": {"name": "r", "namespace": "ns"}, "rules": [rule]}
    role_binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "r", "namespace": "ns"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [sa],
    }
    namespaced = Rbac([role, role_binding], "ns", "sa")
    assert namespaced.allows("get", "discovery.k8s.io", "endpointslices", "ns", "")
    assert not namespaced.allows("get", "discovery.k8s.io", "endpointslices", "*", "*")
    assert not namespaced.allows("get", "discovery.k8s.io", "endpointslices", "other", "")
    assert not namespaced.allows("list", "discovery.k8s.io", "endpointslices", "ns", "")
    assert not Rbac([role, role_binding], "ns", "someone-else").allows(
        "get", "discovery.k8s.io", "endpointslices", "ns", ""
    )

    named = dict(rule, resourceNames=["a"])
    cluster_role = {"kind": "ClusterRole", "metadata": {"name": "c"}, "rules": [named]}
    cluster_binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "c"},
        "roleRef": {"kind": "ClusterRole", "name": "c"},
        "subjects": [sa],
    }
    by_name = Rbac([cluster_role, cluster_binding], "ns", "sa")
    assert by_name.allows("get", "discovery.k8s.io", "endpointslices", "*", "a")
    assert not by_name.allows("get", "discovery.k8s.io", "endpointslices", "*", "*")
    cluster_role["rules"] = [rule]
    assert Rbac([cluster_role, cluster_binding], "ns", "sa").allows(
        "get", "discovery.k8s.io", "endpointslices", "*", "*"
    )

"""The release files agree with each other and with the chart (issue 19).

Cargo.toml, Chart.yaml, the Dockerfile, CHANGELOG.md, the install commands (README, book) and the
GitHub workflows each state the version, the supported Kubernetes versions or a pin; these tests
fail when one of them moves without the others. The chart's `kubeVersion` is checked the way Helm
checks it, with the real Helm SDK.

    pip install helm-python-sdk pytest pyyaml
    pytest tests/chart -q
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modes import CHART_DIR, REPO, split_documents  # noqa: E402

CARGO = tomllib.loads((REPO / "Cargo.toml").read_text())
CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
README = (REPO / "README.md").read_text()
BOOK = REPO / "docs" / "src"
INSTALL = (BOOK / "install.md").read_text()
COMPATIBILITY = (BOOK / "compatibility.md").read_text()
CHANGELOG = (REPO / "CHANGELOG.md").read_text()
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))

# The lowest Kubernetes minor the chart and the binary support (docs/src/compatibility.md).
MIN_KUBERNETES = "1.30"
# SHA-256 of the Apache License 2.0 text as the ASF publishes it (LICENSE-2.0.txt).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def section(text: str, heading: str) -> str:
    """The body of a Markdown section, up to the next heading of the same or a higher level
    (lines in fenced code blocks, such as shell comments, are not headings)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines(keepends=True)
    start = lines.index(heading + "\n") + 1
    body, fenced = [], False
    for line in lines[start:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        body.append(line)
    return "".join(body)


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"(?m)^ARG {name}=(\S+)$", DOCKERFILE)
    assert match, f"Dockerfile has no ARG {name}=…"
    return match.group(1)


def kubernetes_api() -> str:
    """The Kubernetes API version the binary is built against: k8s-openapi's v1_NN feature."""
    features = CARGO["dependencies"]["k8s-openapi"]["features"]
    versions = [f for f in features if re.fullmatch(r"v1_\d+", f)]
    assert len(versions) == 1, features
    return versions[0][1:].replace("_", ".")


# ---------------------------------------------------------------------------------------------
# Versions


def test_one_version_everywhere():
    version = CARGO["package"]["version"]
    assert CHART["version"] == version
    assert CHART["appVersion"] == version
    assert dockerfile_arg("VERSION") == version
    released = re.findall(r"(?m)^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$", CHANGELOG)
    assert released and released[0] == version, "the newest CHANGELOG release is Cargo.toml's"


def test_changelog_keeps_a_changelog():
    headings = re.findall(r"(?m)^## .*$", CHANGELOG)
    assert headings[0] == "## [Unreleased]"
    for heading in headings[1:]:
        assert re.fullmatch(r"## \[\d+\.\d+\.\d+[^\]]*\] - \d{4}-\d{2}-\d{2}", heading), heading
    for name in re.findall(r"(?m)^## \[([^\]]+)\]", CHANGELOG):
        assert re.search(rf"(?m)^\[{re.escape(name)}\]: https://", CHANGELOG), f"no link for {name}"


def test_kubernetes_api_version_agrees():
    api = kubernetes_api()
    assert dockerfile_arg("KUBERNETES_API") == api
    assert 'io.stsguard.kubernetes-api-version="${KUBERNETES_API}"' in DOCKERFILE
    assert f"built against the Kubernetes {api} API" in COMPATIBILITY
    assert f"Kubernetes {api} API" in CHANGELOG


# ---------------------------------------------------------------------------------------------
# Supported Kubernetes versions: Chart.yaml's kubeVersion, the book and Helm


def test_chart_declares_the_supported_kubernetes_versions():
    assert CHART["kubeVersion"] == f">={MIN_KUBERNETES}.0-0"
    compatibility = COMPATIBILITY
    assert f'`kubeVersion: "{CHART["kubeVersion"]}"`' in compatibility
    assert f"| chart {CHART['version']} | {MIN_KUBERNETES} and newer |" in compatibility
    assert f"| binary and image {CARGO['package']['version']} | {MIN_KUBERNETES} and newer |" in (
        compatibility
    )
    for feature in ("matchConditions", "ValidatingAdmissionPolicy", "RelaxedServiceNameValidation"):
        assert feature in compatibility, feature


def _client_install(chart_dir: Path) -> dict[str, Any]:
    """`helm install --dry-run=client`: renders with Helm's default capabilities and applies
    every install-time check, kubeVersion included. No API server is contacted."""
    with helm_python.Config(namespace="stsguard", kube_apiserver="https://127.0.0.1:1") as cfg:
        return cfg.install(str(chart_dir), "stsguard", {}, namespace="stsguard", dry_run="client")


def test_helm_installs_the_chart_on_its_default_kubernetes_version():
    # The SDK offers no way to choose the Kubernetes version (render and install use Helm's
    # default capabilities, lint ignores kubeVersion), so the old-cluster case is shown below
    # with a copy of the chart whose constraint excludes that default.
    release = _client_install(CHART_DIR)
    objects = [
        yaml.safe_load(doc) for doc in split_documents(release["manifest"]) if doc.strip()
    ]
    kinds = {o["kind"]: o for o in objects}
    # The webhook configurations travel in a ConfigMap; the leader registers them once Ready.
    assert {"Deployment", "ConfigMap"} <= set(kinds)
    assert "ValidatingWebhookConfiguration" not in kinds
    registration = next(o for o in objects if o["metadata"]["name"].endswith("-webhooks"))
    assert set(registration["data"]) == {"validating.yaml", "mutating.yaml"}
    # The pre-delete hook is a hook, not part of the manifest.
    assert "Job" not in kinds


def test_helm_refuses_a_cluster_older_than_kube_version(tmp_path):
    copy = tmp_path / "stsguard"
    shutil.copytree(CHART_DIR, copy)
    chart_yaml = copy / "Chart.yaml"
    text = chart_yaml.read_text()
    assert f'kubeVersion: "{CHART["kubeVersion"]}"' in text
    chart_yaml.write_text(text.replace(CHART["kubeVersion"], ">=1.999.0-0"))
    with pytest.raises(helm_python.HelmError) as refused:
        _client_install(copy)
    assert "chart requires kubeVersion: >=1.999.0-0 which is incompatible with Kubernetes" in (
        str(refused.value)
    )


# ---------------------------------------------------------------------------------------------
# The install commands: the README's and the book's install page


def test_install_commands_use_this_version_and_real_values():
    # The README's short form and the book's install page.
    assert (
        f"helm install stsguard oci://ghcr.io/$OWNER/charts/stsguard --version {CHART['version']}"
        in section(README, "## Install")
    )
    install = INSTALL
    version = CHART["version"]
    assert (
        f"helm install stsguard oci://ghcr.io/$OWNER/charts/stsguard --version {version}" in install
    )
    assert f"ghcr.io/$OWNER/stsguard:{version}" in install
    keys = re.findall(r"--set ([A-Za-z][\w.]*)=", install)
    assert {"mode", "certManager.enabled", "image.repository", "image.tag"} <= set(keys)
    for key in keys:
        node: Any = VALUES
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: no such chart value"
            node = node[part]


def test_install_names_the_objects_the_chart_makes():
    # The install page's names are those of a release called stsguard, in cert-manager mode too.
    with helm_python.Chart.load(CHART_DIR) as chart:
        files = chart.render(
            {"certManager": {"enabled": True}}, name="stsguard", namespace="stsguard"
        )
    names = {
        (o["kind"], o["metadata"]["name"])
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for o in map(yaml.safe_load, split_documents(text))
    }
    assert ("Certificate", "stsguard-serving") in names
    assert ("Certificate", "stsguard-ca") in names
    assert ("Deployment", "stsguard") in names
    assert ("ConfigMap", "stsguard-webhooks") in names
    secrets = {
        o["spec"]["secretName"]
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for o in map(yaml.safe_load, split_documents(text))
        if o["kind"] == "Certificate"
    }
    assert secrets == {"stsguard-ca", "stsguard-tls"}
    install = INSTALL
    for name in (
        "stsguard-serving",
        "stsguard-ca",
        "stsguard-tls",
        "deploy/stsguard",
        "stsguard-certs",
    ):
        assert name in install, name


# ---------------------------------------------------------------------------------------------
# The image, the workflows and their pins


def test_dockerfile_pins_its_bases_and_builds_locked():
    bases = re.findall(r"(?m)^FROM (\S+)", DOCKERFILE)
    assert "scratch" in bases
    for base in (b for b in bases if b != "scratch"):
        pinned = re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base)
        assert pinned, f"{base} is not pinned by digest"
    assert any(b.startswith(f"rust:{CARGO['package']['rust-version']}-") for b in bases), (
        "the builder's Rust is the crate's rust-version"
    )
    assert any(b.startswith("gcr.io/distroless/cc-debian12:nonroot@") for b in bases)
    assert "cargo build --release --locked --bin stsguard" in DOCKERFILE
    assert "ENV STSGUARD_GIT_COMMIT=${GIT_COMMIT}" in DOCKERFILE
    assert "USER 65532:65532" in DOCKERFILE
    for label in ("version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE, label
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in DOCKERFILE
    assert CARGO["package"]["license"] == "Apache-2.0"


def test_chart_image_is_the_one_the_release_pushes():
    assert VALUES["image"]["repository"] == "ghcr.io/stsguard/stsguard"
    release = (REPO / ".github" / "workflows" / "release.yml").read_text()
    # The release rewrites this exact line to ghcr.io/<owner>/stsguard before packaging.
    assert 's|^  repository: ghcr.io/stsguard/stsguard$|' in release
    values = (CHART_DIR / "values.yaml").read_text()
    assert re.search(r"(?m)^  repository: ghcr.io/stsguard/stsguard$", values)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_actions_are_pinned_by_commit(workflow):
    uses = re.findall(r"(?m)^\s*-?\s*uses:\s*(\S+)(.*)$", workflow.read_text())
    assert uses, f"{workflow.name} uses no action"
    for ref, rest in uses:
        if ref.startswith("./"):
            continue  # a workflow of this repository
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{ref} is not pinned by commit"
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", rest), f"{ref} has no '# vX.Y.Z' comment"


def test_one_pin_per_action():
    pins: dict[str, set[str]] = {}
    for workflow in WORKFLOWS:
        for action, sha, version in re.findall(
            r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+# (v[\d.]+)", workflow.read_text()
        ):
            pins.setdefault(action, set()).add(f"{sha} {version}")
    assert pins
    for action, seen in pins.items():
        assert len(seen) == 1, f"{action} is pinned to more than one commit: {seen}"


def test_dependabot_keeps_the_pins_current():
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"] for u in config["updates"]}
    assert {"github-actions", "docker"} <= ecosystems


def test_ci_runs_the_ci_script_and_actionlint():
    ci = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert "pull_request:" in ci
    assert "bash .ci/run" in ci
    script = (REPO / ".ci" / "run").read_text()
    assert "actionlint" in script and ".github/workflows/*.yml" in script


# ---------------------------------------------------------------------------------------------
# The documents


def test_license_is_the_apache_2_0_text():
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256


def test_documents_exist_and_point_at_each_other():
    for name in ("LICENSE", "CHANGELOG.md", "SECURITY.md", "CONTRIBUTING.md"):
        assert (REPO / name).is_file(), name
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    assert "BENCHMARKS.md" in contributing
    assert "STSGUARD_BLESS=1" in contributing
    assert "pytest tests/chart" in contributing
    assert "git tag" in contributing
    security = (REPO / "SECURITY.md").read_text()
    assert "Report a vulnerability" in security
    minor = ".".join(CARGO["package"]["version"].split(".")[:2])
    assert f"| {minor}.x (latest) | yes" in security


def test_the_image_build_copies_every_path_cargo_needs():
    """`cargo build` in the Dockerfile's builder refuses a manifest whose named targets are
    missing, and the sources embed files with include_str!: every one of them is copied."""
    root = Path(__file__).resolve().parents[2]
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    needed = {"Cargo.toml", "Cargo.lock", "src"}
    for kind, folder in (("bench", "benches"), ("example", "examples"), ("test", "tests")):
        for target in manifest.get(kind, []):
            needed.add(target.get("path", f"{folder}/{target['name']}.rs").split("/")[0])
    for source in (root / "src").rglob("*.rs"):
        code = source.read_text().split("#[cfg(test)]")[0]
        for path in re.findall(r'include_str!\("([^"]+)"\)', code):
            resolved = (source.parent / path).resolve().relative_to(root)
            needed.add(resolved.parts[0])
    dockerfile = (root / "Dockerfile").read_text()
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(line.split()[1:-1])
    assert needed <= copied, f"the builder stage does not copy {sorted(needed - copied)}"

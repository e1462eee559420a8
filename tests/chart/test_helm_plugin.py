"""The Helm 4 post-renderer plugin: its manifest is a postrenderer/v1 plugin, and its command,
run as Helm runs it on a release rendered by the real Helm SDK, gives the release back with the
mutating webhook's changes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "helm-plugin" / "plugin.yaml"
CHART = Path(__file__).resolve().parent / "fixtures" / "db"
BINARY = ROOT / "target" / "debug" / "stsguard"


def plugin() -> dict:
    return yaml.safe_load(PLUGIN.read_text())


def test_the_manifest_is_a_helm4_postrenderer_plugin():
    p = plugin()
    assert p["apiVersion"] == "v1"
    assert p["type"] == "postrenderer/v1"
    assert p["runtime"] == "subprocess"
    assert p["name"] == "stsguard"
    chart = yaml.safe_load((ROOT / "charts" / "stsguard" / "Chart.yaml").read_text())
    assert p["version"] == chart["appVersion"]
    [command] = p["runtimeConfig"]["platformCommand"]
    assert command["command"] == "stsguard"
    assert command["args"] == ["mutate", "-f", "-"]


def rendered() -> str:
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render({}, name="pg", namespace="apps")
    return "".join(f"---\n# Source: {path}\n{text}" for path, text in sorted(files.items()))


def run_plugin(stdin: str) -> subprocess.CompletedProcess:
    if not BINARY.exists():
        if os.environ.get("STSGUARD_REQUIRE_VALIDATORS"):
            pytest.fail(f"{BINARY} is missing: run cargo build first")
        pytest.skip("stsguard is not built (cargo build)")
    [command] = plugin()["runtimeConfig"]["platformCommand"]
    return subprocess.run(
        [str(BINARY), *command["args"]],
        input=stdin.encode(),
        capture_output=True,
        check=False,
    )


def test_the_plugin_command_mutates_a_release_rendered_by_helm():
    out = run_plugin(rendered())
    assert out.returncode == 0, out.stderr.decode()
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    [template] = sts["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "data"
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["metadata"]["annotations"]["stsguard.io/mutated"] == (
        "sts-inject-volume-claim-templates"
    )
    # The Service went through untouched, its `# Source:` line with it.
    assert "# Source: db/templates/statefulset.yaml" in out.stdout.decode()
    again = run_plugin(out.stdout.decode())
    assert again.stdout == out.stdout, "a second pass changes nothing"


def test_a_broken_release_stops_helm():
    out = run_plugin(rendered() + "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicas: many}\n")
    assert out.returncode == 2
    assert out.stdout == b""
    assert b"not a valid apps/v1 StatefulSet" in out.stderr

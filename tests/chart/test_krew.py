"""What the release publishes besides the image and the chart: the krew manifest of the kubectl
plugin (packaging/krew_manifest.py: one platform per release archive, with its URI and checksum,
in krew's Plugin schema), and the book, built with the mdBook CI tests it with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "krew_manifest.py"
TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "aarch64-apple-darwin"]


def run(dist: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--version", "1.2.3", "--repository", "acme/stsguard", str(dist)],
        capture_output=True,
        text=True,
    )


def test_one_platform_per_archive_with_its_checksum(tmp_path):
    for i, target in enumerate(TARGETS):
        name = f"stsguard-1.2.3-{target}.tar.gz"
        (tmp_path / f"{name}.sha256").write_text(f"{str(i) * 64}  {name}\n")
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    plugin = yaml.safe_load(out.stdout)
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin"
    assert plugin["metadata"]["name"] == "stsguard"
    assert plugin["spec"]["version"] == "v1.2.3"
    assert plugin["spec"]["shortDescription"]
    assert "kubectl stsguard audit" in plugin["spec"]["description"]
    platforms = {
        (p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]): p
        for p in plugin["spec"]["platforms"]
    }
    assert set(platforms) == {("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64")}
    linux = platforms[("linux", "amd64")]
    assert linux["uri"] == (
        "https://github.com/acme/stsguard/releases/download/v1.2.3/"
        "stsguard-1.2.3-x86_64-unknown-linux-gnu.tar.gz"
    )
    assert linux["sha256"] == "0" * 64
    assert linux["bin"] == "stsguard-1.2.3-x86_64-unknown-linux-gnu/stsguard"
    assert platforms[("darwin", "arm64")]["sha256"] == "2" * 64


def test_a_missing_archive_fails(tmp_path):
    out = run(tmp_path)
    assert out.returncode != 0
    assert "is missing" in out.stderr


@pytest.mark.parametrize("needle", ["packaging/krew_manifest.py", "stsguard-krew.yaml"])
def test_the_release_publishes_it(needle):
    release = (REPO / ".github" / "workflows" / "release.yml").read_text()
    assert needle in release


def test_the_release_publishes_the_book_ci_tests():
    # One mdBook for both: the book CI builds and tests is the book the release publishes.
    release = (REPO / ".github" / "workflows" / "release.yml").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    version = re.search(r'(?m)^MDBOOK_VERSION=(\S+)$', ci).group(1)
    assert f'MDBOOK_VERSION: "{version}"' in release
    assert "mdbook build docs" in release

#!/usr/bin/env python3
"""Writes the krew manifest of the kubectl plugin (`kubectl stsguard`) for one release, from the
release archives' .sha256 files in DIST: one platform per archive, its URI on the GitHub release
and its checksum. The release workflow runs it and publishes the manifest with the release;
`kubectl krew install --manifest=stsguard-krew.yaml` installs from it.

    python3 packaging/krew_manifest.py --version 0.1.0 --repository OWNER/stsguard dist
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Rust target triples of the release archives, as krew's os/arch selectors.
PLATFORMS = {
    "x86_64-unknown-linux-gnu": ("linux", "amd64"),
    "aarch64-unknown-linux-gnu": ("linux", "arm64"),
    "aarch64-apple-darwin": ("darwin", "arm64"),
}

DESCRIPTION = """\
    Checks StatefulSet and Service manifests, or a live cluster, against the
    rules of the stsguard admission webhook: governing Service, storage,
    probes, update strategy and more, with the fix for each violation.
      kubectl stsguard audit -f manifests/
      kubectl stsguard audit --cluster
      kubectl stsguard rules
"""


def manifest(version: str, repository: str, dist: Path) -> str:
    platforms = []
    for target, (os_name, arch) in PLATFORMS.items():
        name = f"stsguard-{version}-{target}"
        checksum_file = dist / f"{name}.tar.gz.sha256"
        if not checksum_file.exists():
            raise SystemExit(f"krew_manifest: {checksum_file} is missing")
        sha256 = checksum_file.read_text().split()[0]
        # Quoted in the YAML below: a hex digest of digits and one `e` reads as a number.
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise SystemExit(f"krew_manifest: {checksum_file} holds no SHA-256")
        platforms.append(
            f"""  - selector:
      matchLabels:
        os: {os_name}
        arch: {arch}
    uri: https://github.com/{repository}/releases/download/v{version}/{name}.tar.gz
    sha256: "{sha256}"
    bin: {name}/stsguard
"""
        )
    return f"""apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: stsguard
spec:
  version: v{version}
  homepage: https://github.com/{repository}
  shortDescription: Check StatefulSets against stsguard's best-practice rules
  description: |
{DESCRIPTION}  platforms:
{"".join(platforms)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--repository", required=True, help="OWNER/NAME on GitHub")
    parser.add_argument("dist", type=Path)
    args = parser.parse_args()
    sys.stdout.write(manifest(args.version, args.repository, args.dist))


if __name__ == "__main__":
    main()

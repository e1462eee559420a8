#!/usr/bin/env python3
"""Renders charts/stsguard in every mode of modes.py into OUTDIR/<mode>.yaml.

    python3 tests/chart/render.py OUTDIR

Each file is multi-document YAML (documents separated by `---` lines, each preceded by a
`# Source: <template>` comment), ready for a test that deserializes every object. Needs the
PyPI packages helm-python-sdk and PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helm_python  # noqa: E402

from modes import CHART_DIR, MODES, manifests, render_files  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with helm_python.Chart.load(CHART_DIR) as chart:
        for mode, values in MODES.items():
            path = out / f"{mode}.yaml"
            path.write_text(manifests(render_files(chart, values)))
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

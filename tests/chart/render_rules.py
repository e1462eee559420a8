#!/usr/bin/env python3
"""Writes the chart's alerts (the PrometheusRule's spec, rendered as RELEASE in NAMESPACE with
scraping, alerts and the dashboard on) as a Prometheus rule file, for tests/observability.rs.

    python3 tests/chart/render_rules.py OUTFILE

Needs the PyPI packages helm-python-sdk and PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helm_python  # noqa: E402
import yaml  # noqa: E402

from modes import CHART_DIR, prometheus_rules  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTFILE", file=sys.stderr)
        return 2
    with helm_python.Chart.load(CHART_DIR) as chart:
        Path(argv[1]).write_text(yaml.safe_dump(prometheus_rules(chart), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The book's chart values table (docs/src/chart-values.md) is generated from values.yaml (its
comments and defaults) and values.schema.json (the types), as helm-docs does for Helm charts;
this test fails when the page is stale. STSGUARD_BLESS=1 rewrites it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "stsguard"
PAGE = REPO / "docs" / "src" / "chart-values.md"
BEGIN = "<!-- chart-values:begin -->\n"
END = "<!-- chart-values:end -->"

KEY = re.compile(r"^( *)([A-Za-z][\w-]*):(.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """Every key of values.yaml in file order, dotted, with the comment block right above it
    (helm-docs' convention: a blank line ends a comment's reach)."""
    keys: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            comment = []
            continue
        indent, name = len(match.group(1)), match.group(2)
        path = [(i, n) for i, n in path if i < indent] + [(indent, name)]
        keys.append((".".join(n for _, n in path), " ".join(c for c in comment if c)))
        comment = []
    return keys


def schema_node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node: dict[str, Any] = schema
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part, {})
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]] | {
                k: v for k, v in node.items() if k != "$ref"
            }
    return node


def type_of(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kinds = node.get("type")
    if kinds is None:
        options = node.get("oneOf") or node.get("anyOf") or []
        kinds = [o.get("type", "?") for o in options] or ["any"]
    if isinstance(kinds, str):
        kinds = [kinds]
    return ", ".join(kinds)


def value_at(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def cell(text: str) -> str:
    # mdBook passes HTML through: a bare <fullname> would vanish as an unknown tag.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def values_markdown() -> str:
    text = (CHART_DIR / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    rows = ["| value | type | default | |", "|---|---|---|---|"]
    whole: list[str] = []
    for dotted, comment in documented_keys(text):
        if any(dotted.startswith(prefix + ".") for prefix in whole):
            continue
        value = value_at(values, dotted)
        node = schema_node(schema, dotted)
        if isinstance(value, dict) and value and "properties" not in node:
            # A free-form map (resources, labels): one row, its keys are the user's.
            whole.append(dotted)
        elif isinstance(value, dict) and value:
            # A section: listed when its comment says something about all its keys.
            if comment:
                rows.append(f"| `{dotted}` | object | | {cell(comment)} |")
            continue
        about = comment or node.get("description", "")
        default = json.dumps(value, separators=(",", ":"))
        rows.append(f"| `{dotted}` | {type_of(node)} | `{cell(default)}` | {cell(about)} |")
    return "\n".join(rows) + "\n"


def test_every_value_has_a_schema_type():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    text = (CHART_DIR / "values.yaml").read_text()
    whole: list[str] = []
    for dotted, _ in documented_keys(text):
        if any(dotted.startswith(prefix + ".") for prefix in whole):
            continue
        node = schema_node(schema, dotted)
        assert node, f"values.schema.json does not describe {dotted}"
        if "properties" not in node and node.get("type") == "object":
            whole.append(dotted)


def test_chart_values_page_is_generated_from_the_chart():
    page = PAGE.read_text()
    start = page.index(BEGIN) + len(BEGIN)
    stop = page.index(END, start)
    table = values_markdown()
    if page[start:stop] == table:
        return
    if os.environ.get("STSGUARD_BLESS"):
        PAGE.write_text(page[:start] + table + page[stop:])
        return
    raise AssertionError(
        "docs/src/chart-values.md is stale; run `STSGUARD_BLESS=1 python3 -m pytest "
        "tests/chart/test_docs.py`"
    )

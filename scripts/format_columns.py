"""Print the column table of docs/format.md from the Arrow schemas (the one source of truth).

Usage: python scripts/format_columns.py > /tmp/columns.md   (tests/test_docs.py checks the doc matches)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.arrow import FAILURES_SCHEMA, samples_schema  # noqa: E402
from schemas.records import FEATURE_ARRAYS  # noqa: E402


def _rows(prefix: str, field: pa.Field):
    kind = field.type
    name = f"{prefix}{field.name}"
    if pa.types.is_struct(kind):
        yield name, "struct", field.nullable
        for child in kind:
            yield from _rows(name + ".", child)
    elif pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
        yield name, "list<struct>", field.nullable
        for child in kind.value_type:
            yield from _rows(name + "[].", child)
    else:
        yield name, str(kind), field.nullable


def columns_markdown() -> str:
    lines = []
    for title, schema in (("samples.arrow", samples_schema(FEATURE_ARRAYS)), ("failures.arrow", FAILURES_SCHEMA)):
        lines += [f"#### {title}", "", "| column | Arrow type | nullable |", "|---|---|---|"]
        for field in schema:
            lines += [f"| `{n}` | `{t}` | {'yes' if nullable else ''} |" for n, t, nullable in _rows("", field)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(columns_markdown())

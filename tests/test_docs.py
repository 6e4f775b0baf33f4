"""docs/format.md stays true: its column table matches the schemas, its examples run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "scripts"))
from format_columns import columns_markdown  # noqa: E402

from schemas.store import DatasetWriter  # noqa: E402
from tests.schemas.test_store import DIMS, make_sample  # noqa: E402

FORMAT = (REPO / "docs" / "format.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_column_table_is_generated_from_the_schemas():
    documented = FORMAT.split("<!-- columns:begin -->\n")[1].split("<!-- columns:end -->")[0]
    assert documented.strip() == columns_markdown().strip()


def test_examples_read_a_sample_with_pyarrow_zarr_and_duckdb(tmp_path):
    writer = DatasetWriter(tmp_path / "out" / "sample", {}, DIMS)
    writer.write_shard([make_sample("v_demo", n_frames=3)], [])
    blocks = python_blocks(FORMAT)
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) <= 10
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
    first = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True)
    assert first.stdout.splitlines() == ["v_demo 3 ['a red circle']", "(3, 8) float16"]


def test_the_title_names_the_schema_version_the_code_writes():
    from schemas.version import SCHEMA_VERSION
    assert FORMAT.splitlines()[0] == f"# The finsta on-disk format (schema version {SCHEMA_VERSION})"

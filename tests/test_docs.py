"""The docs stay true: every python snippet of README.md and docs/*.md runs verbatim in a test here (or is
marked ``<!-- not run: why -->`` right above it), every documented command line names real commands and
options, docs/format.md's column table matches the schemas."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "scripts"))
from format_columns import columns_markdown  # noqa: E402

from schemas.store import DatasetWriter  # noqa: E402
from tests.schemas.test_store import DIMS, make_sample  # noqa: E402

FORMAT = (REPO / "docs" / "format.md").read_text()
DOCS = ["README.md"] + sorted(f"docs/{path.name}" for path in (REPO / "docs").glob("*.md"))
_NOT_RUN = "<!-- not run: "
# Each python snippet (doc, index among that doc's python blocks) and the test here that runs it.
RUN_BY = {("docs/format.md", 0): "test_examples_read_a_sample_with_pyarrow_zarr_and_duckdb",
          ("docs/format.md", 1): "test_examples_read_a_sample_with_pyarrow_zarr_and_duckdb",
          ("docs/model.md", 0): "test_the_exported_host_snippet_embeds_a_real_clip_end_to_end",
          ("docs/tsg.md", 0): "test_the_caption_parsing_snippet_runs"}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def snippets(doc: str) -> list[tuple[str, Optional[str]]]:
    """``doc``'s python blocks, each with the reason given right above it for not running it (or None)."""
    found = re.findall(r"(?:<!-- not run: (.*?) -->\n)?```python\n(.*?)```", (REPO / doc).read_text(), flags=re.S)
    return [(block, why or None) for why, block in found]


def snippet(doc: str, index: int) -> str:
    return snippets(doc)[index][0]


def run_snippet(doc: str, index: int) -> dict:
    """Run a snippet verbatim in this process (its imports are mostly loaded already); its globals."""
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(snippet(doc, index), f"{doc} python block {index}", "exec"), namespace)
    return namespace


def test_every_python_snippet_is_run_by_a_test_or_says_why_not():
    found = {(doc, i): why for doc in DOCS for i, (_, why) in enumerate(snippets(doc))}
    assert [key for key, why in found.items() if key not in RUN_BY and not why] == []
    assert set(RUN_BY) <= set(found)   # every test here still finds its snippet
    assert all(name in globals() for name in RUN_BY.values())


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


def test_the_caption_parsing_snippet_runs(capsys):
    namespace = run_snippet("docs/tsg.md", 0)
    assert namespace["tasks"][0].tsgs[0].caption_id == "v1#0"
    assert capsys.readouterr().out.splitlines() == ["v1#0 0.0 ( man , sit on , bench )", "( man , sit on , bench )"]


@pytest.fixture(scope="module")
def exported_host(tmp_path_factory) -> Path:
    """A tiny host trained two steps on random features of the default embedders' widths and identity
    (what ``build-sgs`` records), exported as ``python cli.py export`` does."""
    sys.path.insert(0, str(REPO / "tests" / "finsta_model"))
    import finsta_samples
    from finsta_model.config import TrainConfig
    from finsta_model.export import export_host
    from finsta_model.train import train
    from schemas.options import identity
    from stages.embed_text import EmbedTextConfig, text_feature_dims
    from stages.embed_visual import EmbedVisualConfig, visual_feature_dims

    visual, text = EmbedVisualConfig(), EmbedTextConfig()
    dims = {**visual_feature_dims(visual, 0), **text_feature_dims(text)}
    root = tmp_path_factory.mktemp("host")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finsta_samples, "DIMS", dims)
        patch.setattr(finsta_samples, "CELLS", visual.grid ** 2)
        rng = random.Random(0)
        with DatasetWriter(root / "shards", {}, dims, host={"embed_visual": identity(visual),
                                                            "embed_text": identity(text)}) as writer:
            writer.write_shard([finsta_samples.make_sample(rng, f"v{i}") for i in range(8)], [])
    config = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=2, batch_size=4, log_every=1,
                         checkpoint_every=2, shuffle_buffer=4, warmup_steps=1)
    train(root / "shards", root / "run", config, progress=False)
    export_host(root / "run", root / "exported")
    return root / "exported"


def test_the_exported_host_snippet_embeds_a_real_clip_end_to_end(exported_host, tmp_path, monkeypatch, capsys):
    """docs/model.md's snippet (the same code as stages/host_inputs.py's example): a real clip and two
    captions through the host's own embedders to scores and unit embeddings."""
    import stages.host_inputs
    block = snippet("docs/model.md", 0)
    assert textwrap.indent(block, "    ") in stages.host_inputs.__doc__
    shutil.copytree(exported_host, tmp_path / "exported")
    shutil.copy(REPO / "pipeline" / "sample_data" / "bottles.mp4", tmp_path / "clip.mp4")   # 9 s, real
    monkeypatch.chdir(tmp_path)
    namespace = run_snippet("docs/model.md", 0)
    result, embed = namespace["result"], namespace["embed"]
    assert result.scores.shape == (2,) and np.isfinite(result.scores).all()
    assert str(result.scores) in capsys.readouterr().out
    assert result.frames == 9 and result.captions.shape == (2, len(result.video))   # 1 frame per second
    np.testing.assert_allclose(np.linalg.norm(result.captions, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.video), 1.0, rtol=1e-5)
    features = embed.features("clip.mp4", ["a man rides a horse"])
    dims = embed.host.dims
    assert features["frame"].shape == (9, dims["frame"]) and features["frame_patch"].shape == (81, dims["frame_patch"])
    assert features["caption"].shape == (1, dims["caption"])
    assert 0 < len(features["caption_token"][0]) <= embed.text_cfg.max_tokens


def test_every_documented_command_line_names_a_real_command_and_its_options():
    """Shell lines are not run (they need the user's data: DIR, OUT, …), but each ``cli.py``/``finsta``
    command in a fenced block of README.md and docs/*.md, and each row of README's command table, must
    name a command of cli.py and only options it has; the table lists every command once."""
    import typer.main

    import cli
    commands = typer.main.get_command(cli.app).commands
    lines = [(doc, line) for doc in DOCS for block in re.findall(r"```\w*\n(.*?)```", (REPO / doc).read_text(), re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    used = [(doc, m.group(1), m.group(2)) for doc, line in lines
            for m in re.finditer(r"(?:cli\.py|\bfinsta) ([a-z][a-z-]*)([^&|;#]*)", line)]
    readme = (REPO / "README.md").read_text()
    rows = readme.split("| command | what it does |")[1].split("\n\n")[0]   # README's command table
    table = re.findall(r"^\| `([a-z][a-z-]*) ?([^`]*)`", rows, re.M)
    assert sorted(name for name, _ in table) == sorted(commands)
    problems = []
    for doc, name, rest in used + [("README.md table", name, rest) for name, rest in table]:
        options = {o for p in commands[name].params for o in p.opts + p.secondary_opts} if name in commands else set()
        problems += [f"{doc}: {name} {flag}" for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)
                     if flag not in options] + ([f"{doc}: no command {name}"] if name not in commands else [])
    assert len(used) > 30 and problems == []

"""The docs stay true: every python snippet and every shell snippet (a ```bash block) of README.md and
docs/*.md runs in a test here (or is marked ``<!-- not run: why -->`` right above it), every documented
command line names real commands and options, docs/format.md's column table matches the schemas."""
from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "scripts"))
from format_columns import columns_markdown  # noqa: E402

from schemas.store import DatasetWriter, open_dataset, verify  # noqa: E402
from tests.schemas.test_store import DIMS, make_sample  # noqa: E402
from tests.test_cli import in_process  # noqa: E402

FORMAT = (REPO / "docs" / "format.md").read_text()
DOCS = ["README.md"] + sorted(f"docs/{path.name}" for path in (REPO / "docs").glob("*.md"))
_NOT_RUN = "<!-- not run: "
# Each python snippet (doc, index among that doc's python blocks) and the test here that runs it.
RUN_BY = {("docs/format.md", 0): "test_examples_read_a_sample_with_pyarrow_zarr_and_duckdb",
          ("docs/format.md", 1): "test_examples_read_a_sample_with_pyarrow_zarr_and_duckdb",
          ("docs/model.md", 0): "test_the_exported_host_snippet_embeds_a_real_clip_end_to_end",
          ("docs/tsg.md", 0): "test_the_caption_parsing_snippet_runs"}
# Each shell snippet (doc, index among that doc's ```bash blocks) and the test here that runs it.
SHELL_RUN_BY = {("README.md", 0): "test_the_readme_quick_start_builds_inspects_and_verifies_the_sample",
                ("README.md", 1): "test_the_readme_quick_start_builds_inspects_and_verifies_the_sample",
                ("docs/format.md", 0): "test_the_feature_sizes_command_runs_on_a_small_dataset",
                ("docs/synthetic.md", 0): "test_the_synthetic_world_commands_run",
                ("docs/tsg.md", 0): "test_the_caption_command_lines_run"}
# A line that starts like a command: a fenced block holding one must be tagged ```bash (so it is run or marked).
COMMAND_LINE = re.compile(r"^\s*(?:python3?|\.venv/bin/|finsta |bash |nice |scripts/|mkdir |[A-Z_]+=\S* )", re.M)
SHARED = Path(os.environ.get("FINSTA_SHARED", REPO / ".." / "shared"))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def snippets(doc: str) -> list[tuple[str, Optional[str]]]:
    """``doc``'s python blocks, each with the reason given right above it for not running it (or None)."""
    found = re.findall(r"(?:<!-- not run: (.*?) -->\n)?```python\n(.*?)```", (REPO / doc).read_text(), flags=re.S)
    return [(block, why or None) for why, block in found]


def fenced_blocks(doc: str) -> list[tuple[str, str, Optional[str]]]:
    """``(tag, body, why not run)`` of each fenced block of ``doc``, in order (fences may be indented)."""
    blocks, lines, i = [], (REPO / doc).read_text().splitlines(), 0
    while i < len(lines):
        fence = re.match(r"\s*```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        why = re.match(r"\s*<!-- not run: (.*?) -->$", lines[i - 1]) if i else None
        blocks.append((fence.group(1), "\n".join(lines[i + 1:end]) + "\n", why and why.group(1)))
        i = end + 1
    return blocks


def shell_snippets(doc: str) -> list[tuple[str, Optional[str]]]:
    """``doc``'s ```bash blocks, each with the reason given right above it for not running it (or None)."""
    return [(body, why) for tag, body, why in fenced_blocks(doc) if tag == "bash"]


def run_shell(block: str, cwd: Path, capsys, own_process: bool = False) -> list[str]:
    """Run each command line of a shell snippet in ``cwd`` (the caller chdirs there); every one must exit 0.
    ``python cli.py``/``.venv/bin/python cli.py``/``finsta`` lines call ``cli.main`` in this process (what that
    process runs, without a Python start) unless ``own_process``; other lines run as processes
    (``python`` = this interpreter, a script path relative to the repository). Returns each line's stdout."""
    outputs = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if not own_process and (argv[0] == "finsta" or argv[:2] in (["python", "cli.py"], [".venv/bin/python", "cli.py"])):
            code, out, err = in_process(capsys, *argv[1 if argv[0] == "finsta" else 2:])
        else:
            if argv[0] in ("python", "python3", ".venv/bin/python"):
                argv[0] = sys.executable
            if len(argv) > 1 and not (cwd / argv[1]).exists() and (REPO / argv[1]).exists():
                argv[1] = str(REPO / argv[1])
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
            code, out, err = done.returncode, done.stdout, done.stderr
        assert code == 0, f"{line}: exit {code}\n{err[-3000:]}"
        outputs.append(out)
    return outputs


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


def test_every_shell_snippet_is_run_by_a_test_or_says_why_not():
    found = {(doc, i): why for doc in DOCS for i, (_, why) in enumerate(shell_snippets(doc))}
    assert [key for key, why in found.items() if key not in SHELL_RUN_BY and not why] == []
    assert set(SHELL_RUN_BY) <= set(found) and not any(found[key] for key in SHELL_RUN_BY)
    assert all(name in globals() for name in SHELL_RUN_BY.values())
    untagged = [(doc, body[:60]) for doc in DOCS for tag, body, _ in fenced_blocks(doc)
                if tag not in ("bash", "python") and COMMAND_LINE.search(body)]
    assert untagged == []   # command lines in a block not tagged bash would escape both checks


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


@pytest.mark.slow
def test_the_readme_quick_start_builds_inspects_and_verifies_the_sample(tmp_path, monkeypatch, capsys):
    """Command 1's build of the embedded sample verbatim, in its own process as a user runs it: the default
    executor, a local Ray of its own (nothing shared with the test clusters), the real clips and default
    stages; then the inspect/verify block verbatim. ``bash scripts/setup.sh`` and command 2 are what CI
    (.ci/run) runs."""
    quick, look = shell_snippets("README.md")[0][0], shell_snippets("README.md")[1][0]
    build = [part.strip() for line in quick.splitlines() for part in line.split("&&") if "cli.py build-sgs" in part]
    assert build == [".venv/bin/python cli.py build-sgs --dataset sample --out out/sample"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_TMPDIR", str(Path(tempfile.mkdtemp(prefix="fqs", dir="/tmp"))))   # short socket paths
    try:
        run_shell(build[0], tmp_path, capsys, own_process=True)
    finally:
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    stats = json.loads((tmp_path / "out" / "sample" / "stats.json").read_text())
    assert stats["cluster"]["nodes"] == 1   # the Ray executor ran it (the sequential one reports no cluster)
    listed, _, verified = run_shell(look, tmp_path, capsys)
    assert listed.split() == ["intel-bottles", "intel-person"] and verify(tmp_path / "out" / "sample") == []
    assert verified.strip() == "ok: out/sample verified" and (tmp_path / "sample.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_synthetic_world_commands_run(tmp_path, monkeypatch, capsys):
    """docs/synthetic.md's block verbatim (two videos, the sequential executor: no Ray start)."""
    monkeypatch.chdir(tmp_path)
    made, built, dsg, tsg = run_shell(shell_snippets("docs/synthetic.md")[0][0], tmp_path, capsys)
    assert len(open_dataset(tmp_path / "out" / "world-sgs")) == 2
    assert "detection   precision" in dsg and "SPICE F1" in tsg


def test_the_caption_command_lines_run(tmp_path, monkeypatch, capsys):
    """docs/tsg.md's first block verbatim, on two captions and their gold graphs (caps.txt, GOLD.csv)."""
    (tmp_path / "caps.txt").write_text("the car is red\na man sits on a bench\n")
    (tmp_path / "GOLD.csv").write_text('image_id,region_id,caption,scene_graph\n1,1,the car is red,"( car , is , red )"\n'
                                       '1,2,a man sits on a bench,"( man , sit on , bench )"\n')
    monkeypatch.chdir(tmp_path)
    factual, _, scored = run_shell(shell_snippets("docs/tsg.md")[0][0], tmp_path, capsys)
    assert factual.splitlines() == ["( car , is , red )", "( man , sit on , bench )"]
    assert len((tmp_path / "graphs.jsonl").read_text().splitlines()) == 2 and json.loads(scored)["spice_f1"] == 100.0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "activitynet" / "val_2.json").is_file(), reason="../shared absent")
def test_the_feature_sizes_command_runs_on_a_small_dataset(tmp_path):
    """docs/format.md's command verbatim (OUT: a dataset of two written samples), from a folder next to
    which ../shared is."""
    work = tmp_path / "work"
    DatasetWriter(work / "OUT", {}, DIMS).write_shard([make_sample("a", n_frames=3), make_sample("b")], [])
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    (printed,) = run_shell(shell_snippets("docs/format.md")[0][0], work, None)
    assert json.loads(printed)

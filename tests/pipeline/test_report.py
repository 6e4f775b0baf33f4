"""What build-sgs and inspect print agrees with stats.json and with the store's failure rows."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import cli
from pipeline.build import BuildResult
from pipeline.report import failure_lines, stats_dict, summary_lines, write_stats
from schemas.records import FailureRecord, SampleFeatures
from schemas.store import DatasetWriter, open_dataset
from tests.pipeline.tools.samples import bottle_sample

DIMS = {"frame": 8, "detection": 8, "text_node": 4, "caption": 4}
FAILURES = [FailureRecord("m.jsonl:5", "select", "bad_record", "line 5: Expecting ',' delimiter: column 12"),
            FailureRecord("clip-02", "decode", "decode_error", "moov atom not found"),
            FailureRecord("clip-03", "decode", "decode_error", "moov atom not found"),
            FailureRecord("clip-01", "select", "duplicate_key", "the dataset lists this id more than once")]


def features() -> SampleFeatures:
    return SampleFeatures(np.zeros((6, 8), np.float32), np.zeros((16, 8), np.float32),
                          np.zeros((9, 4), np.float32), np.zeros((3, 4), np.float32))


def written(root: Path, failures: list[FailureRecord]) -> BuildResult:
    """A dataset of one sample and ``failures``, and the BuildResult of the run that wrote it."""
    writer = DatasetWriter(root, {"test": 1}, DIMS)
    writer.write_shard([(bottle_sample(), features())], failures)
    result = BuildResult(out=root, total=1 + len(failures), to_run=1 + len(failures), shards_written=1,
                         committed=len(writer.committed_keys()), failed=len(writer.failed_keys()),
                         failures_by_reason=Counter(f.error_type for f in failures),
                         stage_seconds=Counter(decode=1.5, detect=8.5), stage_frames=Counter(decode=6, detect=6),
                         wall_seconds=12.25, first_result_seconds=4.0)
    return result


def test_the_final_lines_are_the_figures_of_stats_json(tmp_path):
    stats = write_stats(written(tmp_path / "out", FAILURES))
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    out = tmp_path / "out"
    assert summary_lines(stats, out) == [
        "this run: 5 samples, 4 failed (bad_record 1, decode_error 2, duplicate_key 1), 12.2 s "
        "(4.0 s to the first result)",
        f"wrote {out}: 1 committed, {stats['failed']} failed ("
        + ", ".join(f"{k} {v}" for k, v in stats["failures_by_reason"].items()) + f"); counts in {out}/stats.json",
        f"list the failures: python cli.py inspect {out} --failures"]
    assert stats["failures_by_reason"] == {"bad_record": 1, "decode_error": 2, "duplicate_key": 1}


def test_a_run_with_nothing_to_do_says_so(tmp_path):
    result = written(tmp_path / "out", [])
    result.to_run, result.skipped_committed = 0, 1
    lines = summary_lines(stats_dict(result), tmp_path / "out")
    assert lines[0] == "this run: nothing to do (skipped 1 committed before)"
    assert len(lines) == 2 and "0 failed;" in lines[1]


def test_failure_lines_have_a_header_and_one_row_per_failure(tmp_path):
    lines = failure_lines(FAILURES, tmp_path)
    assert lines[0] == f"4 failures in {tmp_path} (bad_record 1, decode_error 2, duplicate_key 1)"
    assert lines[1].split() == ["key", "stage", "reason", "message"]
    assert lines[2].split()[:3] == ["m.jsonl:5", "select", "bad_record"]
    assert lines[2].endswith("line 5: Expecting ',' delimiter: column 12")
    assert lines[1].index("stage") == lines[2].index("select") == lines[3].index("decode")   # aligned columns
    assert len(lines) == 2 + len(FAILURES)
    assert failure_lines([], tmp_path) == [f"no failures in {tmp_path}"]


def run_cli(capsys, *args: str) -> str:
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def test_inspect_failures_reads_the_rows_stats_json_counts(tmp_path, capsys):
    out = tmp_path / "out"
    stats = write_stats(written(out, FAILURES))
    text = run_cli(capsys, "inspect", str(out), "--failures").splitlines()
    assert len(text) - 2 == stats["failed"] == len(open_dataset(out).failures())
    assert text[0].endswith("(" + ", ".join(f"{k} {v}" for k, v in stats["failures_by_reason"].items()) + ")")
    rows = json.loads(run_cli(capsys, "inspect", str(out), "--failures", "--json"))
    assert [r["key"] for r in rows] == [f.key for f in open_dataset(out).failures()]
    summary = json.loads(run_cli(capsys, "inspect", str(out), "--json"))
    assert (summary["failed"], summary["failures_by_reason"]) == (stats["failed"], stats["failures_by_reason"])


def test_inspect_without_failures_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    written(out, [])
    assert run_cli(capsys, "inspect", str(out), "--failures") == f"no failures in {out}\n"
    assert run_cli(capsys, "inspect", str(out), "--failures", "--json") == "[]\n"


def test_inspect_key_is_a_summary_all_is_everything_png_says_which_frames(tmp_path, capsys):
    out = tmp_path / "out"
    written(out, [])
    summary = run_cli(capsys, "inspect", str(out), "--key", "intel-bottles")
    everything = run_cli(capsys, "inspect", str(out), "--key", "intel-bottles", "--all")
    assert "top relations" in summary and "relations per frame" in everything
    assert summary.splitlines()[-1].startswith("(summary; --all")
    drawn = run_cli(capsys, "inspect", str(out), "--key", "intel-bottles", "--png", str(tmp_path / "s.png"))
    assert drawn.splitlines()[-1] == f"drew {tmp_path / 's.png'}: frames drawn: #0 #1 #2 #3 #4 #5 (all)"
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize("args", [["--png", "x.png"], ["--key", "nope"]])
def test_inspect_mistakes_are_one_line(tmp_path, capsys, args):
    out = tmp_path / "out"
    written(out, [])
    assert cli.main(["inspect", str(out), *args]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_inspect_and_stats_of_an_s3_dataset_read_like_the_local_one(tmp_path, capsys, s3_env):
    from schemas.storage import location
    from tests.storage_servers import make_bucket
    url = make_bucket(s3_env, "inspect") + "/out"
    want_stats, got_stats = write_stats(written(tmp_path / "out", FAILURES)), write_stats(written(location(url), FAILURES))
    assert json.loads(location(f"{url}/stats.json").read_text()) == got_stats
    assert {k: v for k, v in got_stats.items() if k != "out"} == {k: v for k, v in want_stats.items() if k != "out"}
    for args in (["--json"], ["--failures", "--json"], ["--key", bottle_sample().key], ["--list"]):
        want = run_cli(capsys, "inspect", str(tmp_path / "out"), *args).replace(str(tmp_path / "out"), "OUT")
        assert run_cli(capsys, "inspect", url, *args).replace(url, "OUT") == want

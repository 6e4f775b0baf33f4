"""parse-captions: one caption per line in → one graph per line out, same order."""
import json

import pytest

import cli
from pipeline.tools.parse_captions import parse_to_tsgs, run_parse_captions
from schemas.errors import UserError
from stages.captions.io import tsg_from_json

CAPTIONS = ["a man sits on a bench", "", "two dogs run quickly", "🐶 <b>!!!</b>", "the car is red"]


@pytest.fixture()
def caption_file(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    return path


def test_factual_lines_in_input_order(caption_file, tmp_path):
    out = tmp_path / "out" / "graphs.txt"
    assert run_parse_captions(caption_file, fmt="factual", out=out) == len(CAPTIONS)
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(CAPTIONS)
    assert lines[0] == "( man , sit on , bench )"
    assert lines[1] == ""
    assert lines[4] == "( car , is , red )"


def test_json_lines_are_tsgs(caption_file, capsys):
    run_parse_captions(caption_file, fmt="json")
    lines = capsys.readouterr().out.splitlines()
    tsgs = [tsg_from_json(line) for line in lines]
    assert [t.text for t in tsgs] == CAPTIONS
    assert [t.caption_id for t in tsgs] == [f"line#{i}" for i in range(len(CAPTIONS))]
    assert any(n.kind == "pred_attribute" and n.label == "quickly" for n in tsgs[2].nodes)
    assert json.loads(lines[1])["nodes"] == []


def test_parse_to_tsgs_keeps_order():
    tsgs = parse_to_tsgs(["a red ball", "a blue cup"])
    assert [t.objects()[0].label for t in tsgs] == ["ball", "cup"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"fmt": "yaml"}, "--format"),
    ({"parser": "nosuch"}, "nosuch"),
    ({"stanza_dir": "/nonexistent/stanza"}, "/nonexistent/stanza"),
])
def test_bad_options_are_user_errors(caption_file, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        run_parse_captions(caption_file, **kwargs)


def test_cli_missing_file_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["parse-captions", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none.txt" in err and len(err.splitlines()) == 1


def test_cli_writes_out_file(caption_file, tmp_path):
    out = tmp_path / "g.jsonl"
    assert cli.main(["parse-captions", str(caption_file), "--format", "json", "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(CAPTIONS)

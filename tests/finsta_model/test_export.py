"""An exported host is validated before it is used (issue 26, item 3): a truncated or bit-flipped weights file,
a missing tensor, bad / negative / huge sizes in host.json, NaN weights and symbolic links are each refused in
one line — through load_host, eval and train --init-host (exit 2) — and nothing is allocated for forged sizes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from finsta_model import load_host
from finsta_model.config import TrainConfig
from finsta_model.export import export_host
from finsta_model.train import train
from schemas.errors import UserError
from schemas.store import sha256_file
from tests.test_cli import in_process

TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=1, steps=2, batch_size=4, log_every=1,
                   checkpoint_every=2, shuffle_buffer=6, warmup_steps=1)


@pytest.fixture(scope="module")
def exported(small_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    train(small_dataset, root / "run", TINY, progress=False)
    export_host(root / "run", root / "host")
    return root / "host"


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    target = tmp_path / "host"
    shutil.copytree(exported, target)
    return target


def _refused(path: Path, match: str) -> str:
    with pytest.raises(UserError, match=match) as error:
        load_host(path)
    message = str(error.value)
    assert "\n" not in message
    return message


def _edit_info(path: Path, **changes) -> None:
    info = json.loads((path / "host.json").read_text())
    for section, values in changes.items():
        info[section] = {**info[section], **values} if isinstance(values, dict) else values
    (path / "host.json").write_text(json.dumps(info))


def _resave(path: Path, weights: dict) -> None:
    """Rewrite the weights and record their checksum: what only the shape or finiteness checks can catch."""
    save_file(weights, str(path / "host.safetensors"))
    _edit_info(path, weights_sha256=sha256_file(path / "host.safetensors"))


def test_an_exported_host_loads(exported):
    assert load_host(exported).dims == json.loads((exported / "host.json").read_text())["feature_dims"]


@pytest.mark.parametrize("cut", [8, 1000, -100])
def test_a_truncated_weights_file_is_refused(copy, cut):
    data = (copy / "host.safetensors").read_bytes()
    (copy / "host.safetensors").write_bytes(data[:cut])
    _refused(copy, "unreadable")


@pytest.mark.parametrize("where", [0, 20, -5])
def test_a_bit_flipped_weights_file_is_refused(copy, where):
    data = bytearray((copy / "host.safetensors").read_bytes())
    data[where] ^= 0x40
    (copy / "host.safetensors").write_bytes(bytes(data))
    _refused(copy, "unreadable")


def test_a_missing_or_extra_tensor_is_refused(copy):
    weights = load_file(str(copy / "host.safetensors"))
    name = sorted(weights)[0]
    _resave(copy, {k: v for k, v in weights.items() if k != name})
    assert name in _refused(copy, "does not hold the tensors")


def test_nan_weights_are_refused(copy):
    weights = load_file(str(copy / "host.safetensors"))
    name = sorted(weights)[-1]
    weights[name][...] = float("nan")
    _resave(copy, weights)
    assert name in _refused(copy, "NaN or infinite")


@pytest.mark.parametrize("changes", [{"arguments": {"dim": -16}}, {"arguments": {"dim": "16"}},
                                     {"arguments": {"layers": 10 ** 9}}, {"arguments": {"dim": 10 ** 12}},
                                     {"arguments": {"heads": 0}}, {"arguments": {"dropout": 2}},
                                     {"arguments": {"unknown": 1}}, {"feature_dims": {"frame": -1}},
                                     {"feature_dims": {"frame": 10 ** 12}}, {"feature_dims": {"caption": 4.5}},
                                     {"feature_dims": None}, {"arguments": []}])
def test_bad_negative_or_huge_sizes_in_host_json_are_refused(copy, changes):
    _edit_info(copy, **changes)
    _refused(copy, "must")


@pytest.mark.parametrize("changes", [{"arguments": {"dim": 8192, "heads": 2}}, {"arguments": {"layers": 64}},
                                     {"arguments": {"max_frames": 1 << 16}}, {"feature_dims": {"frame": 1 << 16}}])
def test_huge_sizes_within_bounds_are_checked_against_the_file_before_allocating(copy, changes):
    # dim 8192 would be ~13 GB of weights if built: the header check refuses it on the meta device first
    _edit_info(copy, **changes)
    _refused(copy, "does not hold the tensors")


@pytest.mark.parametrize("name", ["host.json", "host.safetensors"])
def test_symlinked_files_are_not_followed(copy, tmp_path, name):
    outside = tmp_path / f"outside-{name}"
    (copy / name).rename(outside)
    (copy / name).symlink_to(outside)
    _refused(copy, "symbolic link")


def test_eval_and_init_host_exit_2_in_one_line(copy, small_dataset, tmp_path, capsys):
    _edit_info(copy, arguments={"dim": -1})
    commands = [["eval", "--shards", str(small_dataset), "--checkpoint", str(copy)],
                ["train", "--shards", str(small_dataset), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--init-host", str(copy)]]
    for command in commands:
        code, out, err = in_process(capsys, *command)   # cli.main as `python cli.py` runs it
        assert code == 2, err
        assert "Traceback" not in err and "arguments.dim must be" in err
        assert len(err.strip().splitlines()) == 1, err


def test_host_json_bounds_are_the_configs_size_limits():
    """One source for how large a host may be: a host.json may not ask for more than a TrainConfig may train."""
    from finsta_model.config import SIZE_LIMITS, TrainConfig
    from finsta_model.export import SIZE_BOUNDS
    host_argument = {"dim": "dim", "heads": "heads", "host_layers": "layers", "host_slots": "slots"}
    assert {field: SIZE_BOUNDS[argument][1] for field, argument in host_argument.items()} == SIZE_LIMITS
    for field, limit in SIZE_LIMITS.items():
        sizes = {"dim": {"heads": 1}, "heads": {"dim": limit * 2}}.get(field, {})   # dim stays divisible by heads
        with pytest.raises(UserError, match=f"^{field} must be ≤ {limit}"):
            TrainConfig(**{field: limit * 2, **sizes}).validate()

"""The CLI: every command has --help; user mistakes are one line on stderr with exit code 2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["build-sgs", "train", "eval", "inspect", "verify", "parse-captions", "eval-tsg", "make-synthetic",
            "eval-dsg"]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``cli.main(args)`` in this process: what ``python cli.py ARGS`` runs (its last line is
    ``sys.exit(main())``), without a Python start per case; :func:`test_a_mistake_in_a_fresh_process_is_one_line_exit_2` checks
    the process itself once."""
    import cli as module

    code = module.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    code, out, err = in_process(capsys, command, "--help")
    assert code == 0, err
    assert "Usage:" in out


def test_build_sgs_help_lists_every_detector_backend_read_only_when_help_is_printed(capsys):
    """--detector's help comes from the detector registry, and only when help is printed: importing cli (what
    every command does, `inspect` and `verify` too) imports no stage (stages.detect pulls in scipy)."""
    from stages.registry import DETECTORS

    code, out, err = in_process(capsys, "build-sgs", "--help")
    assert code == 0, err
    help_text = " ".join(out.split())
    assert all(f"{name} (" in help_text for name in DETECTORS.names()) and "[default: auto" in help_text
    fresh = subprocess.run([sys.executable, "-c", "import sys, cli; print(sorted(m for m in sys.modules "
                            "if m.split('.')[0] in ('stages', 'pipeline', 'scipy', 'torch', 'numpy')))"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "[]", (fresh.stdout, fresh.stderr)


MISTAKES = [
    (["verify", "/nonexistent/ds"], "/nonexistent/ds"),
    (["inspect", "/nonexistent/ds", "--list"], "/nonexistent/ds"),
    (["build-sgs", "--bogus-option"], "--bogus-option"),
    (["build-sgs", "--limit", "zero"], "--limit"),
    (["build-sgs", "--dataset", "nosuchset", "--dry-run"], "nosuchset"),
    (["build-sgs", "--executor", "threads", "--dry-run"], "threads"),
    (["build-sgs", "--set", "decode.nosuchfield=1", "--dry-run"], "decode.nosuchfield"),
    (["build-sgs", "--config", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
    (["no-such-command"], "no-such-command"),
    (["build-sgs", "--out", "https://host/prefix", "--dry-run"], "--out https://host/prefix"),   # HTTP is read-only
]


@pytest.mark.parametrize("args, needle", MISTAKES)
def test_user_mistakes_are_one_line_exit_2(args, needle, capsys):
    code, out, err = in_process(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_a_mistake_in_a_fresh_process_is_one_line_exit_2():
    """The process itself: exit status 2 and one stderr line (nothing printed by imports, no traceback)."""
    for args, needle in (MISTAKES[2], MISTAKES[4]):   # a bad option (typer) and a bad value (our UserError)
        result = cli(*args)
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_installed_finsta_command_is_cli_py(tmp_path):
    """What scripts/setup.sh installs: the project's wheel holds cli.py and a `finsta` console command;
    installed (here into a folder, offline) it runs from any folder as `python cli.py` does."""
    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"   # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".venv", ".git", "out", "build", "*.egg-info",
                                                                "__pycache__", "tests"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                            "-w", str(tmp_path / "wheel")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("finsta-*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                                str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    mine = subprocess.run([str(tmp_path / "site" / "bin" / "finsta"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    theirs = subprocess.run([sys.executable, str(repo / "cli.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert mine.returncode == theirs.returncode == 0, mine.stderr
    assert mine.stdout.replace("finsta", "cli.py") == theirs.stdout.replace("finsta", "cli.py")

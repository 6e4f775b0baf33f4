"""The CLI: every command has --help; user mistakes are one line on stderr with exit code 2."""
from __future__ import annotations

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


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("args, needle", [
    (["verify", "/nonexistent/ds"], "/nonexistent/ds"),
    (["inspect", "/nonexistent/ds", "--list"], "/nonexistent/ds"),
    (["build-sgs", "--bogus-option"], "--bogus-option"),
    (["build-sgs", "--limit", "zero"], "--limit"),
    (["build-sgs", "--dataset", "nosuchset", "--dry-run"], "nosuchset"),
    (["build-sgs", "--executor", "threads", "--dry-run"], "threads"),
    (["build-sgs", "--set", "decode.nosuchfield=1", "--dry-run"], "decode.nosuchfield"),
    (["build-sgs", "--config", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
    (["no-such-command"], "no-such-command"),
    (["build-sgs", "--out", "s3://bucket/prefix", "--dry-run"], "--out s3://bucket/prefix"),
])
def test_user_mistakes_are_one_line_exit_2(args, needle):
    result = cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr

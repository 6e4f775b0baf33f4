"""finsta command line. Thin: parse options, call the owning module, map errors.

Every command's work lives in a package (see docs/architecture.md); this file
only turns options into calls. A :class:`schemas.errors.UserError` or a bad
option prints one line and exits 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from schemas.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="finsta: video–caption datasets → scene graphs → alignment training.")


def not_implemented(command: str) -> None:
    raise UserError(f"'{command}' is not implemented yet")


# ------------------------------------------------------------------ build
@app.command("build-sgs")
def build_sgs(
    dataset: str = typer.Option("sample", help="activitynet | msrvtt | manifest | synthetic | sample"),
    data_root: Optional[Path] = typer.Option(None, help="dataset folder (or manifest .jsonl)"),
    out: Path = typer.Option(Path("out/sample"), help="output dataset folder"),
) -> None:
    """Build TSG/DSG/HSG shards from a video–caption dataset."""
    not_implemented("build-sgs")


@app.command("inspect")
def inspect(
    out: Path = typer.Argument(..., help="a dataset folder written by build-sgs"),
) -> None:
    """List samples or show one sample's graphs."""
    not_implemented("inspect")


@app.command("verify")
def verify(directory: Path = typer.Argument(..., help="a dataset folder written by build-sgs")) -> None:
    """Check every file of a dataset against its sha256 in the manifest (exit 1 on any problem)."""
    from schemas.store import verify as verify_dataset

    problems = verify_dataset(directory)
    for problem in problems:
        print(problem)
    if problems:
        raise typer.Exit(1)
    print(f"ok: {directory} verified")


# ------------------------------------------------------------------ captions
@app.command("parse-captions")
def parse_captions(file: Path = typer.Argument(..., help="one caption per line")) -> None:
    """Parse captions into textual scene graphs, one graph per output line."""
    not_implemented("parse-captions")


@app.command("eval-tsg")
def eval_tsg(gold: Path = typer.Option(..., help="FACTUAL csv with caption,scene_graph columns")) -> None:
    """Score the caption parser against FACTUAL gold graphs."""
    not_implemented("eval-tsg")


# ------------------------------------------------------------------ synthetic
@app.command("make-synthetic")
def make_synthetic(out: Path = typer.Option(..., help="output folder")) -> None:
    """Generate the synthetic video–caption world with exact ground truth."""
    not_implemented("make-synthetic")


@app.command("eval-dsg")
def eval_dsg(out_dir: Path = typer.Argument(..., help="dataset folder written by build-sgs")) -> None:
    """Score built DSGs/HSGs against synthetic ground truth."""
    not_implemented("eval-dsg")


# ------------------------------------------------------------------ model
@app.command("train")
def train(shards: Path = typer.Option(..., help="dataset folder written by build-sgs")) -> None:
    """Train the Finsta alignment modules from shards."""
    not_implemented("train")


@app.command("eval")
def evaluate(shards: Path = typer.Option(..., help="dataset folder written by build-sgs")) -> None:
    """Text↔video retrieval metrics for a checkpoint."""
    not_implemented("eval")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as error:  # bad option or value: one line, no traceback
        ctx = getattr(error, "ctx", None)
        where = ctx.command_path.split(" ", 1)[-1] + " " if ctx is not None and " " in ctx.command_path else ""
        print(f"error: {error.format_message()} (see: python cli.py {where}--help)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""finsta command line. Thin: parse options, call the owning module, map errors.

Every command's work lives in a package (see docs/architecture.md); this file
only turns options into calls. A :class:`schemas.errors.UserError` or a bad
option prints one line and exits 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from schemas.errors import UserError


def detector_help() -> str:
    """--detector's help, read from the registered backends (names, what each is, default thresholds)."""
    from stages.detect import REAL_DATA_BACKEND, SYNTHETIC_BACKEND
    from stages.detectors import detector_class
    from stages.registry import DETECTORS

    backends = " | ".join(f"{name} ({detector_class(name).summary}; threshold {detector_class(name).default_score_threshold:g})"
                          for name in DETECTORS.names())
    return (f"detector backend, sets detect.name: {backends} [default: auto = {SYNTHETIC_BACKEND} on synthetic, "
            f"{REAL_DATA_BACKEND} on real data]")


class _BuildCommand(TyperCommand):
    """build-sgs: --detector's help is read from the backends only when help is printed. Building it at
    import would import stages.detect (scipy, ...) in every command: `inspect`/`verify` would pay for it."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.params:
            if param.name == "detector":
                param.help = detector_help()
        super().format_help(ctx, formatter)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="finsta: video–caption datasets → scene graphs → alignment training.")


# ------------------------------------------------------------------ build
@app.command("build-sgs", cls=_BuildCommand)
def build_sgs(
    dataset: Optional[str] = typer.Option(None, help="activitynet | msrvtt | manifest | synthetic | sample "
                                          "[default: sample]"),
    data_root: Optional[str] = typer.Option(None, help="dataset folder (manifest: the .jsonl/.csv file); a path "
                                            "or an s3:// gs:// https:// URL"),
    out: Optional[str] = typer.Option(None, help="output dataset folder, local, s3://bucket/prefix or "
                                       "gs://bucket/prefix [default: out/DATASET]"),
    split: Optional[str] = typer.Option(None, help="activitynet split: train | val_1 | val_2 [default: train]"),
    captions: Optional[str] = typer.Option(None, help="captions file (path or URL), overriding the dataset's layout"),
    videos: Optional[str] = typer.Option(None, help="videos folder (path or URL), overriding the dataset's layout"),
    mapping: Optional[str] = typer.Option(None, help="id → video path file (JSON or CSV; path or URL)"),
    detector: Optional[str] = typer.Option(None, help="detector backend (listed when --help is printed)"),
    config: Optional[Path] = typer.Option(None, help="JSON/YAML file of options, nested like --show-config prints"),
    set_: list[str] = typer.Option([], "--set", help="set one option, e.g. --set decode.fps=2 or "
                                   "--set 'detect.lite.grid=[2,3]' (repeatable; keys: --show-config)"),
    show_config: bool = typer.Option(False, "--show-config", help="print every option (value, type, default) "
                                     "as YAML that --config reads back, and exit"),
    limit: Optional[int] = typer.Option(None, min=1, help="process at most N samples of the dataset"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster instead of starting a local one"),
    executor: Optional[str] = typer.Option(None, help="ray | sequential (one process, for debugging) [default: ray]"),
    workers: Optional[int] = typer.Option(None, min=0, help="actors per CPU pool; 0 = sized on the free CPUs by "
                                          "measured throughput [default: 1]"),
    num_cpus: Optional[int] = typer.Option(None, min=0, help="CPUs of the local Ray instance [default: 0 = all]"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="reprocess only samples recorded as failed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete the finsta dataset in OUT and start over"),
    check_data: bool = typer.Option(False, "--check-data", help="before continuing in OUT, hash every file of "
                                    "every committed shard (reads all of it, like verify): a damaged shard is "
                                    "quarantined and its samples redone"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and counts, write nothing"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 when any sample failed"),
    quiet: bool = typer.Option(False, "--quiet", help="plain log lines instead of the live display"),
) -> None:
    """Build TSG/DSG/HSG shards from a video–caption dataset."""
    from pipeline.main import build_command

    code = build_command(dict(dataset=dataset, data_root=data_root, out=out, split=split, captions=captions,
                              videos=videos, mapping=mapping, detector=detector, config=config, overrides=set_,
                              show_config=show_config, limit=limit, ray_address=ray_address, executor=executor,
                              workers=workers, num_cpus=num_cpus, retry_failed=retry_failed, overwrite=overwrite,
                              check_data=check_data,
                              dry_run=dry_run, strict=strict, quiet=quiet))
    raise typer.Exit(code)


@app.command("inspect")
def inspect(
    out: str = typer.Argument(..., help="a dataset folder written by build-sgs, or its s3:// or gs:// URL"),
    list_: bool = typer.Option(False, "--list", help="list the committed sample keys"),
    json_: bool = typer.Option(False, "--json", help="print JSON (the counts, --list, --failures)"),
    failures: bool = typer.Option(False, "--failures", help="list the failure rows (key, stage, reason, message)"),
    key: Optional[str] = typer.Option(None, help="show this sample's DSG/TSG/HSG (a summary; --all for everything)"),
    all_: bool = typer.Option(False, "--all", help="with --key: every relation per frame, TSG node and edge, "
                              "negative"),
    png: Optional[Path] = typer.Option(None, help="with --key: also draw 6 frames (picked to show every track), "
                                       "boxes and graphs to this PNG"),
) -> None:
    """Show a dataset's counts, list samples or failures, or show one sample's graphs (and draw them)."""
    from pipeline.main import inspect_command

    inspect_command(out, list_keys=list_, as_json=json_, failures=failures, key=key, png=png, full=all_)


@app.command("verify")
def verify(directory: str = typer.Argument(..., help="a dataset folder written by build-sgs, or its s3:// or gs:// URL")
           ) -> None:
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
def parse_captions(
    file: Path = typer.Argument(..., help="one caption per line"),
    parser: str = typer.Option("spacy", help="spacy | stanza | learned"),
    format: str = typer.Option("factual", "--format", help="factual | json (one TSG per line)"),
    out: Optional[Path] = typer.Option(None, help="output file (default: stdout)"),
    stanza_dir: str = typer.Option("", help="stanza resources folder (default ~/stanza_resources)"),
) -> None:
    """Parse captions into textual scene graphs, one graph per output line."""
    from pipeline.tools.parse_captions import run_parse_captions
    run_parse_captions(file, parser=parser, fmt=format, out=out, stanza_dir=stanza_dir)


@app.command("eval-tsg")
def eval_tsg(
    gold: Path = typer.Option(..., help="FACTUAL csv with caption,scene_graph columns"),
    parser: str = typer.Option("spacy", help="spacy | stanza | learned"),
    pred: Optional[Path] = typer.Option(None, help="precomputed graphs instead of parsing: csv with a "
                                        "scene_graph column, or FACTUAL / TSG-JSON lines"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
    diff: Optional[Path] = typer.Option(None, help="write a per-caption diff (JSON lines) here"),
    stanza_dir: str = typer.Option("", help="stanza resources folder (default ~/stanza_resources)"),
) -> None:
    """Score the caption parser against FACTUAL gold graphs (SPICE-style F1, set match)."""
    from pipeline.tools.eval_tsg import ParseOptions, evaluate_file, format_summary
    summary = evaluate_file(gold, ParseOptions(parser=parser, stanza_dir=stanza_dir, pred=pred), diff=diff)
    print(json.dumps(summary) if json_out else format_summary(summary))


# ------------------------------------------------------------------ synthetic
@app.command("make-synthetic")
def make_synthetic(
    out: Path = typer.Option(..., help="output folder"),
    count: int = typer.Option(16, help="number of videos"),
    seed: int = typer.Option(0, help="random seed: same seed and options, byte-identical output"),
    duration: float = typer.Option(6.0, help="seconds per video"),
    fps: int = typer.Option(8, help="frames per second"),
    width: int = typer.Option(320, help="frame width in pixels (even)"),
    height: int = typer.Option(240, help="frame height in pixels (even)"),
    objects_min: int = typer.Option(2, help="fewest objects per video (≥ 2)"),
    objects_max: int = typer.Option(4, help="most objects per video (≤ 5)"),
    difficulty: str = typer.Option("medium", help="easy (plain background) | medium (textures) | "
                                   "hard (occlusion, repeated colours)"),
    uncaptioned: int = typer.Option(0, help="leave the last N videos without captions (video-side training "
                                    "data: TrainConfig.uncaptioned)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a set made with other parameters"),
) -> None:
    """Generate the synthetic video–caption world with exact ground truth."""
    from pipeline.synthetic import generate
    folder = generate(out, count, seed, overwrite=overwrite, uncaptioned=uncaptioned, duration=duration, fps=fps,
                      width=width, height=height, objects_min=objects_min, objects_max=objects_max,
                      difficulty=difficulty)
    kept = f" ({uncaptioned} without captions)" if uncaptioned else ""
    print(f"ok: {count} videos{kept}, captions and truth in {folder}")


@app.command("eval-dsg")
def eval_dsg(
    out_dir: Path = typer.Argument(..., help="dataset folder written by build-sgs"),
    truth: Path = typer.Option(..., help="the synthetic folder (or its truth/ subfolder) the videos came from"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Score built DSGs/HSGs against synthetic ground truth."""
    from pipeline.tools.eval_dsg import run_eval_dsg
    print(run_eval_dsg(out_dir, truth, as_json=json_out))


# ------------------------------------------------------------------ model
@app.command("train")
def train(
    shards: str = typer.Option(..., help="dataset folder written by build-sgs, or its s3:// or gs:// URL"),
    out: Path = typer.Option(..., help="run folder: metrics.jsonl, config.json, checkpoints/"),
    config: Optional[Path] = typer.Option(None, help="JSON/YAML file of finsta_model.config.TrainConfig fields"),
    steps: Optional[int] = typer.Option(None, min=1, help="total optimisation steps (default: config)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its latest checkpoint"),
    overwrite: bool = typer.Option(False, "--overwrite", help="remove the run in --out and start over"),
    seed: Optional[int] = typer.Option(None, help="random seed (default: config)"),
    device: str = typer.Option("cpu", help="cpu | cuda (bf16 autocast on cuda)"),
    no_osc: bool = typer.Option(False, "--no-osc", help="ablation: no object-centred spatial contrast"),
    no_ptc: bool = typer.Option(False, "--no-ptc", help="ablation: no predicate-centred temporal contrast"),
    no_stgd: bool = typer.Option(False, "--no-stgd", help="ablation: no Gaussian differential block"),
    no_sg: bool = typer.Option(False, "--no-sg", help="host-only baseline: no scene-graph branch"),
    init_host: Optional[Path] = typer.Option(None, help="post-train this exported host (`export --out DIR`) "
                                             "instead of starting the host from scratch"),
    checkpoint_every: Optional[int] = typer.Option(None, min=1, help="checkpoint every N steps"),
    workers: Optional[int] = typer.Option(None, min=0, help="data-loader worker processes (default: config)"),
    ray_workers: Optional[int] = typer.Option(None, min=1, help="train on N Ray Train workers (DDP; the global "
                                              "batch is split over them) [default: in this process, no Ray]"),
    ray_address: Optional[str] = typer.Option(None, help="with --ray-workers: join this Ray cluster instead of "
                                              "starting a local one"),
    max_failures: int = typer.Option(2, min=0, help="with --ray-workers: restarts from the last checkpoint "
                                     "after a worker failure before giving up"),
) -> None:
    """Train the Finsta alignment modules from shards."""
    from finsta_model.config import run_config
    from finsta_model.distributed import TrainingFailed, train_distributed
    from finsta_model.train import TrainingInterrupted
    from finsta_model.train import train as train_here
    if ray_workers is None and ray_address is not None:
        raise UserError("--ray-address needs --ray-workers N (the number of training workers on that cluster)")
    run = run_config(out, resume, config, steps=steps, seed=seed, checkpoint_every=checkpoint_every,
                     num_workers=workers, init_host=None if init_host is None else str(init_host.resolve()),
                     **{name: False for name, off in (("use_osc", no_osc), ("use_ptc", no_ptc),
                                                      ("use_stgd", no_stgd), ("use_sg", no_sg)) if off})
    try:
        if ray_workers is None:
            summary = train_here(shards, out, run, resume=resume, device=device, overwrite=overwrite)
        else:
            summary = train_distributed(shards, out, run, ray_workers, resume=resume, device=device,
                                        address=ray_address, max_failures=max_failures, overwrite=overwrite)
    except TrainingFailed as error:   # a Ray worker failed more often than --max-failures: one line, exit 1
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1)
    except TrainingInterrupted as stopped:   # Ctrl-C / SIGTERM: the step is checkpointed; say how to resume
        print(stopped.line(shards), file=sys.stderr)
        raise typer.Exit(stopped.exit_code)
    print(json.dumps(summary))


@app.command("eval")
def evaluate(
    shards: str = typer.Option(..., help="dataset folder written by build-sgs, or its s3:// or gs:// URL"),
    checkpoint: Path = typer.Option(..., help="a checkpoint folder, a run folder (its latest checkpoint), or an "
                                              "exported host (reads host features only)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
) -> None:
    """Text↔video retrieval metrics for a checkpoint (with and without the SG branch) or an exported host."""
    from finsta_model.evaluate import evaluate as run_eval, format_report
    report = run_eval(shards, checkpoint, device)
    if as_json:
        for warning in report["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(report) if as_json else format_report(report))


@app.command("export")
def export(
    checkpoint: Path = typer.Option(..., help="a run folder (its latest checkpoint) or a checkpoint folder"),
    out: Path = typer.Option(..., help="folder for host.safetensors + host.json"),
    video_sg_free: bool = typer.Option(False, "--video-sg-free", help="also the caption side of the video-side "
                                       "SG-free score (video_side.safetensors): galleries need host features "
                                       "only, queries their TSG (a run with host_slots and video_side_weight)"),
) -> None:
    """Write the post-trained SG-free host of a run (load it with finsta_model.load_host)."""
    from finsta_model.export import export_host
    info = export_host(checkpoint, out, video_sg_free=video_sg_free)
    print(json.dumps({"out": str(out), "step": info["trained"]["step"], "feature_dims": info["feature_dims"]}))


def main(argv: Optional[list[str]] = None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (PermissionError, ConnectionError) as error:   # object storage: credentials, network (one line)
        from schemas.storage import redact
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted: what was committed is kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except typer.TyperException as error:  # bad option or value: one line, no traceback
        if type(error).__name__ == "NoArgsIsHelpError":
            print(error.ctx.get_help(), file=sys.stderr)
            return 2
        ctx = getattr(error, "ctx", None)
        where = ctx.command_path.split(" ", 1)[-1] + " " if ctx is not None and " " in ctx.command_path else ""
        print(f"error: {error.format_message()} (see: python cli.py {where}--help)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""build-sgs throughput on the synthetic set, Ray overhead, 1→2 CPU speed-up, driver memory.

Prints one JSON object:

* ``videos_per_hour`` (Ray, 2 CPUs) and per-stage time shares;
* ``ray_overhead``: Ray wall time / plain sequential loop over the same stages,
  both pinned to 1 core (``taskset``), target ≤ 1.2. Ray's own processes (GCS,
  raylet, agents, the driver's scheduler) share that core, so
  this is the CPU cost of orchestration;
* ``ray_overhead_2cpu``: the same two runs (1 worker) with both cores
  available: the wall-time cost a user of a small machine sees;
* ``speedup_1_to_2_cpus``: Ray on 1 pinned core / Ray on 2 cores, target ≥ 1.6;
* ``driver_rss_ratio``: peak driver RSS with the large vs the small set, target ≤ 1.2.

Start-up (Ray, worker processes, model loads: tens of seconds on 2 cores) is a
fixed cost, so the ratios are also given "after start-up": wall time from the
first finished sample to the last.

Usage::

    python bench/bench_pipeline.py [--videos 200] [--rss-videos 50,500]
    python bench/bench_pipeline.py --real [--repeats 3] [--engines opencv,openvino] [--set KEY=VALUE ...]
    python bench/bench_pipeline.py --real --executor ray [--repeats 3] [--set KEY=VALUE ...]

``--real``: the three ../shared clips (``$FINSTA_SHARED``, default ../shared)
through ``build-sgs --dataset manifest`` with the defaults, sequential executor
(no Ray start-up; model loads are counted in ``first_result_s`` and left out of
the steady figures), once per ``ssd`` engine, interleaved, ``--repeats`` times:
``opencv`` (OpenCV DNN and the torch EfficientNet-Lite0 embed: the engines
before issue 28) and ``openvino`` (the defaults: OpenVINO for both). Per
engine: videos/hour and frames/s (steady: after the first result), CPU-seconds per sampled frame (this child and its ffmpeg children,
whole run), per-stage shares, and the bare detector (``detect()`` in the stage's
batches, same frames, same engine, its own process) in frames/s and frames per
CPU-second; ``pipeline_vs_bare_detector`` = pipeline steady frames/s ÷ bare
detector frames/s (target ≥ 0.85), also from CPU time; and
``pipeline_vs_bare_detector_steady_cpu``: the same frames through every stage
in one process after the models are loaded (no executor, no load counted:
CPU of the process and its ffmpeg children) in frames per CPU-second ÷ the
bare detector's. On a machine the bare detector keeps busy (2 streams on 2
cores), the steady wall ratio cannot exceed this one for long: every stage's
CPU comes out of the same cores.

``--real --executor ray``: the same clips through the Ray executor on a local 2-CPU Ray with the defaults
(OpenVINO; ``--engines`` applies to the sequential runs only) and ``--workers 0`` (actors balanced on the
free CPUs by busy share), as issue 25 asks: does the whole pipeline approach the detector's own throughput?
Each repeat builds the three clips and, in another output, the same clips twice more (nine videos, ids made
distinct); the steady throughput is the difference of the two, (frames of 9 − frames of 3) / (wall of 9 −
wall of 3), so that Ray's start-up and model loads cancel (with two actors working at once, a "first
result" does not mark the end of start-up). The bare detector runs on the clips' frames in its own process,
as above; ``pipeline_vs_bare_detector`` = steady pipeline frames/s ÷ bare detector frames/s. Each repeat
also measures ``pipeline_vs_bare_detector_steady_cpu`` as above (the ceiling the wall ratio can reach
while the detector alone keeps both cores busy).
Each Ray build's CPU is sampled from /proc for the whole process tree (the driver, the ``_PoolWorker``
actors with their ffmpeg children, Ray's own processes: GCS, raylet, agents);
``ray_steady_cpu_s_per_frame`` per kind is the difference of the two builds per frame (start-up cancels),
``ray_vs_in_process_cpu_per_frame`` its total ÷ the steady in-process pipeline's (what running under Ray
costs in CPU) and ``ray_vs_bare_detector_steady_cpu`` the Ray path's frames per CPU-second ÷ the bare
detector's: unlike the wall ratios, these hold under load. ``ray_vs_in_process_frames_per_s``: the
Ray path's steady frames/s ÷ the in-process run's (the sequential executor once its models are loaded). ``result_bytes_per_frame`` (steady run): each
finished task pickled, per frame: what Ray's store carries from an actor to the driver on CPU, where one
pool runs every stage and frames never leave their actor. ``--set KEY=VALUE`` (repeatable) applies to the
Ray builds (e.g. ``detect.ssd.threads=1``).
The wall figures need a machine whose load holds steady through a repeat: the 3- and 9-video builds and
the bare detector run one after another, so a start-up slowed by a load change does not cancel (at load
1.2 rising to 7.7 one repeat gave 1.09 and the next 5.3); the steady-CPU ratio does not depend on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# --real: "before" = the engines before issue 28 (OpenCV DNN, torch embed); "after" = the defaults (OpenVINO both).
EMBED_ENGINE = {"opencv": "torch", "openvino": "openvino"}


def child(argv: list[str]) -> None:
    """Run cli.main in this process and report wall time and peak RSS as JSON on the last line."""
    import cli
    started = time.perf_counter()
    code = cli.main(argv)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Path(argv[argv.index("--out") + 1])
    run = json.loads((out / "stats.json").read_text())["run"]
    print(json.dumps({"code": code, "wall_s": time.perf_counter() - started, "driver_peak_rss_mib": peak_kib / 1024,
                      "first_result_s": run["first_result_seconds"], "samples": run["samples_run"],
                      "cpu_s": child_cpu_seconds()}))


def child_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ffmpeg decoders)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


SET_ENV = "FINSTA_BENCH_SET"     # the parent's --set assignments, for the --bare and --steady children


def assignments() -> list[str]:
    """The ``--set`` assignments the parent passed down (JSON in ``SET_ENV``)."""
    import os
    return json.loads(os.environ.get(SET_ENV, "[]"))


def bare_detector(clips: list[str], engine: str) -> None:
    """The default detector (with the parent's ``detect.*`` assignments) alone on the clips' default-decoded
    frames, in the stage's batches (JSON line)."""
    from pipeline.config import BuildConfig, apply_overrides
    from stages.decode import DecodeConfig, decode_video
    from stages.detectors import build_detector

    images = [image for clip in clips for image in decode_video(clip, DecodeConfig())[2]]
    base = apply_overrides(BuildConfig(), [a for a in assignments() if a.startswith("detect.")])
    cfg = base.detect.resolved("manifest")
    cfg.ssd.engine = engine
    detector = build_detector(cfg)
    detector.setup()
    detector.detect(images[:cfg.batch_frames])     # warm-up (OpenVINO compiles per input size)
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(images), cfg.batch_frames):
        detector.detect(images[first:first + cfg.batch_frames])
    print(json.dumps({"frames": len(images), "wall_s": time.perf_counter() - started,
                      "cpu_s": time.process_time() - cpu}))


def steady_pipeline(manifest: str, engine: str) -> None:
    """Every stage set up first (not counted), then the clips one at a time through all of them (JSON line)."""
    from pipeline.config import BuildConfig, apply_overrides, finalize
    from pipeline.datasets.base import build_dataset
    from pipeline.executors import run_stages, setup_stages
    from pipeline.plan import plan_pools

    cfg, _ = finalize(apply_overrides(BuildConfig(), ["dataset.name=manifest", f"dataset.data_root={manifest}",
                                                      f"detect.ssd.engine={engine}",
                                                      f"embed_visual.engine={EMBED_ENGINE[engine]}",
                                                      *assignments()]))
    [pool] = plan_pools(cfg)     # on CPU: one pool, every stage
    stages = pool.build()
    setup_stages(stages)
    todo = list(build_dataset(cfg.dataset).tasks())
    started, cpu = time.perf_counter(), child_cpu_seconds()
    frames = 0
    done = []
    for task in todo:
        [task] = run_stages(stages, [task], pool.drop_images_after)
        if task.failure is not None:
            raise SystemExit(f"{task.key}: {task.failure}")
        frames += len(task.frames)
        done.append(task)
    wall, cpu = time.perf_counter() - started, child_cpu_seconds() - cpu
    # what Ray moves per frame on CPU (one pool): each finished task, pickled, from its actor to the driver
    # (the frames stay in the actor; the driver's input tasks are a few hundred bytes)
    import pickle
    result_bytes = sum(len(pickle.dumps(task, protocol=5)) for task in done)
    print(json.dumps({"frames": frames, "wall_s": wall, "cpu_s": cpu, "result_bytes_per_frame": result_bytes / frames}))


def shared_clips() -> list[str]:
    """The ../shared clips (``$FINSTA_SHARED/data/videos/*.mp4``), sorted; exits in one line when there are none."""
    import os
    shared = Path(os.environ.get("FINSTA_SHARED", REPO / ".." / "shared")) / "data" / "videos"
    clips = sorted(str(p) for p in shared.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips in {shared}: set FINSTA_SHARED")
    return clips


def clip_line(video: str, key: str) -> str:
    """One manifest line for a ../shared clip: its key, its path and a caption naming the clip."""
    return json.dumps({"id": key, "video": video, "captions": [
        {"text": f"objects seen in {Path(video).stem.replace('-', ' ')}", "start": 0.0, "end": 5.0}]}) + "\n"


def real_videos(repeats: int, engines: tuple[str, ...], sets: list[str]) -> None:
    """The ../shared clips through build-sgs with each ssd engine, and the bare detector (see module doc);
    ``sets``: config assignments for every build, steady run and (``detect.*``) bare detector."""
    import os
    clips = shared_clips()
    work = Path(tempfile.mkdtemp(prefix="finsta-bench-real-"))
    try:
        manifest = work / "clips.jsonl"
        manifest.write_text("".join(clip_line(c, Path(c).stem) for c in clips))
        runs: dict[str, list] = {engine: [] for engine in engines}
        bare: dict[str, list] = {engine: [] for engine in engines}
        steady: dict[str, list] = {engine: [] for engine in engines}
        for repeat in range(repeats):
            for engine in (engines if repeat % 2 == 0 else engines[::-1]):
                out = work / f"out-{engine}"
                result = run(["build-sgs", "--dataset", "manifest", "--data-root", str(manifest), "--out", str(out),
                              "--quiet", "--executor", "sequential", "--overwrite",
                              "--set", f"detect.ssd.engine={engine}",
                              "--set", f"embed_visual.engine={EMBED_ENGINE[engine]}",
                              *(arg for a in sets for arg in ("--set", a))])
                result["stats"] = json.loads((out / "stats.json").read_text())
                result["load"] = os.getloadavg()[0]
                runs[engine].append(result)
                bare[engine].append(run([engine, *clips], mode="--bare"))
                steady[engine].append(run([engine, str(manifest)], mode="--steady"))
        print(json.dumps({"benchmark": "build_sgs_real_videos", "clips": [Path(c).name for c in clips],
                          "repeats": repeats, "set": sets,
                          **{engine: summarise(runs[engine], bare[engine], steady[engine]) for engine in runs},
                          "load_average_during": [round(r["load"], 2) for rs in runs.values() for r in rs]}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def real_videos_ray(repeats: int, settings: list[str]) -> None:
    """The ../shared clips through build-sgs on Ray with balanced pools, 3 and 9 videos, the bare detector and
    the steady in-process pipeline (see module doc); ``settings``: ``--set`` assignments for the Ray builds."""
    clips = shared_clips()
    work = Path(tempfile.mkdtemp(prefix="finsta-bench-real-ray-"))
    extra = [arg for setting in settings for arg in ("--set", setting)]
    try:
        rounds = []
        for repeat in range(repeats):
            result = {"load": os.getloadavg()}
            for copies in (1, 3):
                manifest = work / f"clips{copies}.jsonl"
                manifest.write_text("".join(clip_line(c, f"{Path(c).stem}-{i}") for i in range(copies) for c in clips))
                out = work / f"out{copies}"
                built = run(["build-sgs", "--dataset", "manifest", "--data-root", str(manifest), "--out", str(out),
                             "--quiet", "--executor", "ray", "--workers", "0", "--num-cpus", "2", "--overwrite",
                             *extra], tree_cpu=True)
                stats = json.loads((out / "stats.json").read_text())
                result[copies] = {"wall_s": round(built["wall_s"], 2), "videos": built["samples"],
                                  "frames": stats["stages"]["decode"]["frames"], "cpu_s": built["tree_cpu_s"],
                                  "cluster": stats.get("cluster")}
            result["bare"] = run(["openvino", *clips], mode="--bare")
            result["steady"] = run(["openvino", str(work / "clips1.jsonl")], mode="--steady")
            frames = result[3]["frames"] - result[1]["frames"]
            steady = frames / (result[3]["wall_s"] - result[1]["wall_s"])
            result["pipeline_frames_per_s_steady"] = round(steady, 3)
            result["bare_detector_frames_per_s"] = round(result["bare"]["frames"] / result["bare"]["wall_s"], 3)
            result["pipeline_vs_bare_detector"] = round(steady / result["bare_detector_frames_per_s"], 3)
            bare_cpu = result["bare"]["frames"] / result["bare"]["cpu_s"]
            in_process = result["steady"]["cpu_s"] / result["steady"]["frames"]
            result["pipeline_vs_bare_detector_steady_cpu"] = round(1 / in_process / bare_cpu, 3)
            # the Ray path's CPU per frame once started (9 − 3 videos: start-up cancels), by process kind
            ray_cpu = {kind: round((result[3]["cpu_s"][kind] - result[1]["cpu_s"][kind]) / frames, 4)
                       for kind in result[1]["cpu_s"]}
            result["ray_steady_cpu_s_per_frame"] = ray_cpu
            result["in_process_steady_cpu_s_per_frame"] = round(in_process, 4)
            result["ray_vs_in_process_cpu_per_frame"] = round(ray_cpu["all"] / in_process, 3)
            result["ray_vs_bare_detector_steady_cpu"] = round(1 / ray_cpu["all"] / bare_cpu, 3)
            # the in-process steady run is the sequential executor once its models are loaded: one process
            result["ray_vs_in_process_frames_per_s"] = round(
                steady / (result["steady"]["frames"] / result["steady"]["wall_s"]), 3)
            result["load_after"] = os.getloadavg()
            rounds.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)

        def span(key: str) -> list[float]:
            return [min(r[key] for r in rounds), max(r[key] for r in rounds)]

        print(json.dumps({"benchmark": "build_sgs_real_videos_ray", "clips": [Path(c).name for c in clips],
                          "settings": settings, "repeats": repeats,
                          "pipeline_frames_per_s_steady": span("pipeline_frames_per_s_steady"),
                          "bare_detector_frames_per_s": span("bare_detector_frames_per_s"),
                          "pipeline_vs_bare_detector": span("pipeline_vs_bare_detector"),
                          "pipeline_vs_bare_detector_steady_cpu": span("pipeline_vs_bare_detector_steady_cpu"),
                          "ray_vs_bare_detector_steady_cpu": span("ray_vs_bare_detector_steady_cpu"),
                          "ray_vs_in_process_cpu_per_frame": span("ray_vs_in_process_cpu_per_frame"),
                          "ray_vs_in_process_frames_per_s": span("ray_vs_in_process_frames_per_s"),
                          "target_pipeline_vs_bare": 0.85, "rounds": rounds}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarise(runs: list[dict], bare: list[dict], steady: list[dict]) -> dict:
    """Ranges over repeats of one engine's pipeline and bare-detector figures."""
    def span(values: list[float], digits: int = 2) -> list[float]:
        return [round(min(values), digits), round(max(values), digits)]

    frames = runs[0]["stats"]["stages"]["decode"]["frames"]
    steady_fps = [frames / steady_seconds(r) for r in runs]
    bare_fps = [b["frames"] / b["wall_s"] for b in bare]
    bare_cpu = [b["frames"] / b["cpu_s"] for b in bare]
    return {
        "videos": runs[0]["samples"], "sampled_frames": frames,
        "wall_s": span([r["wall_s"] for r in runs]), "first_result_s": span([r["first_result_s"] for r in runs]),
        "videos_per_hour_steady": span([r["samples"] * 3600 / steady_seconds(r) for r in runs], 0),
        "frames_per_s_steady": span(steady_fps), "frames_per_s_total": span([frames / r["wall_s"] for r in runs]),
        "cpu_s_per_sampled_frame": span([r["cpu_s"] / frames for r in runs], 3),
        "stage_share": {name: span([r["stats"]["stages"][name]["share"] for r in runs], 3)
                        for name in runs[0]["stats"]["stages"]},
        "stage_seconds": {name: span([r["stats"]["stages"][name]["seconds"] for r in runs], 2)
                          for name in runs[0]["stats"]["stages"]},
        "bare_detector_frames_per_s": span(bare_fps), "bare_detector_frames_per_cpu_s": span(bare_cpu),
        "pipeline_vs_bare_detector": span([p / b for p, b in zip(steady_fps, bare_fps)], 3),
        "pipeline_vs_bare_detector_cpu": span([(frames / r["cpu_s"]) / b for r, b in zip(runs, bare_cpu)], 3),
        "steady_cpu_s_per_sampled_frame": span([s["cpu_s"] / s["frames"] for s in steady], 4),
        "steady_frames_per_s": span([s["frames"] / s["wall_s"] for s in steady]),
        "pipeline_vs_bare_detector_steady_cpu": span([(s["frames"] / s["cpu_s"]) / b for s, b in zip(steady, bare_cpu)],
                                                     3),
        "target_pipeline_vs_bare": 0.85,
    }


def steady_seconds(run: dict) -> float:
    """Wall time after the first sample came back: the per-video cost once workers and models are up."""
    return run["wall_s"] - run["first_result_s"]


def run(args: list[str], pin_one_core: bool = False, mode: str = "--child", tree_cpu: bool = False) -> dict:
    """A child of this script, its JSON line; ``tree_cpu``: plus ``tree_cpu_s``, the CPU seconds of the child and
    every process below it (Ray's) by kind (:class:`TreeCpu`)."""
    command = [sys.executable, __file__, mode, *args]
    if pin_one_core:
        command = ["taskset", "-c", "0", *command]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)
        tree = TreeCpu(proc.pid) if tree_cpu else None
        try:
            while proc.poll() is None:
                if tree is not None:
                    tree.sample()
                time.sleep(TreeCpu.EVERY_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 or not stdout.strip():
        raise SystemExit(f"bench run failed: {' '.join(command)}\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    if tree is not None:
        result["tree_cpu_s"] = tree.seconds()
    return result


class TreeCpu:
    """CPU seconds of a process and everything below it, sampled from /proc every :data:`EVERY_S` (a process's
    last interval before it exits is missed): ``driver`` (the process itself, its own time), ``actors``
    (``_PoolWorker`` processes, with the ffmpeg children they reaped; live ones are not counted again) and
    ``ray`` (every other process: GCS, raylet, agents, idle workers)."""

    EVERY_S = 0.1
    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, root: int):
        self.root = root
        self.seen: dict[tuple[int, int], tuple[str, float]] = {}   # (pid, start) -> (kind, CPU s)
        self.workers: set[int] = set()

    def sample(self) -> None:
        from schemas.reaper import _descendants

        pids = {self.root: 0, **_descendants(self.root)}
        self.workers |= {pid for pid in pids if pid != self.root and "_PoolWorker" in _cmdline(pid)}
        workers = self.workers   # once seen: an exiting worker's command line is empty
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            parent, start = int(fields[1]), int(fields[19])
            if parent in workers:      # ffmpeg: in its worker's reaped time once it ends
                continue
            own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
            kind = "driver" if pid == self.root else "actors" if pid in workers else "ray"
            seconds = (own + (reaped if kind == "actors" else 0)) / self.TICK
            self.seen[(pid, start)] = (kind, max(seconds, self.seen.get((pid, start), ("", 0.0))[1]))

    def seconds(self) -> dict:
        total = {"driver": 0.0, "actors": 0.0, "ray": 0.0}
        for kind, seconds in self.seen.values():
            total[kind] += seconds
        return {**{k: round(v, 2) for k, v in total.items()}, "all": round(sum(total.values()), 2)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def build_args(data: Path, out: Path, executor: str, workers: int, num_cpus: int) -> list[str]:
    return ["build-sgs", "--dataset", "synthetic", "--data-root", str(data), "--out", str(out), "--quiet",
            "--executor", executor, "--workers", str(workers), "--num-cpus", str(num_cpus), "--overwrite"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--rss-videos", default="50,500")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--real", action="store_true", help="the ../shared clips, per ssd engine (module doc)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="opencv,openvino",
                        help="--real, sequential: ssd engines to run (comma-separated)")
    parser.add_argument("--executor", choices=["sequential", "ray"], default="sequential",
                        help="--real: sequential per ssd engine, or ray with balanced pools (module doc)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="--real: a config assignment for every build (repeatable; sequential: also the "
                             "steady runs and, detect.*, the bare detector)")
    options = parser.parse_args()
    if options.real:
        import os
        os.environ[SET_ENV] = json.dumps(options.set)     # the --bare and --steady children read them
        if options.executor == "ray":
            real_videos_ray(options.repeats, options.set)
        else:
            real_videos(options.repeats, tuple(options.engines.split(",")), options.set)
        return
    from pipeline.synthetic.generate import generate

    work = Path(tempfile.mkdtemp(prefix="finsta-bench-"))
    try:
        data = generate(work / "data", options.videos, seed=11)
        seq = run(build_args(data, work / "seq", "sequential", 1, 1), pin_one_core=True)
        ray_one = run(build_args(data, work / "ray1", "ray", 1, 1), pin_one_core=True)
        ray_two = run(build_args(data, work / "ray2", "ray", 2, 2))
        seq_free = run(build_args(data, work / "seq-free", "sequential", 1, 2))
        ray_one_free = run(build_args(data, work / "ray1-free", "ray", 1, 2))
        stats = json.loads((work / "ray2" / "stats.json").read_text())
        small, large = (int(n) for n in options.rss_videos.split(","))
        rss = {}
        for count in (small, large):
            rss_data = generate(work / f"rss{count}", count, seed=12, duration=2.0, fps=4)
            rss[count] = run(build_args(rss_data, work / f"rss-out{count}", "ray", 2, 2))["driver_peak_rss_mib"]
        print(json.dumps({
            "videos": options.videos,
            "videos_per_hour": round(options.videos * 3600 / ray_two["wall_s"], 1),
            "stage_time_share": {name: row["share"] for name, row in stats["stages"].items()},
            "sequential_1core_s": round(seq["wall_s"], 2),
            "ray_1core_s": round(ray_one["wall_s"], 2),
            "ray_2cpu_s": round(ray_two["wall_s"], 2),
            "startup_s": {"sequential": round(seq["first_result_s"], 2), "ray_1core": round(ray_one["first_result_s"], 2),
                          "ray_2cpu": round(ray_two["first_result_s"], 2)},
            "ray_overhead": round(ray_one["wall_s"] / seq["wall_s"], 3),
            "ray_overhead_after_startup": round(steady_seconds(ray_one) / steady_seconds(seq), 3),
            "ray_overhead_target": 1.2,
            "ray_overhead_2cpu": round(ray_one_free["wall_s"] / seq_free["wall_s"], 3),
            "ray_overhead_2cpu_after_startup": round(steady_seconds(ray_one_free) / steady_seconds(seq_free), 3),
            "sequential_2cpu_s": round(seq_free["wall_s"], 2), "ray_1worker_2cpu_s": round(ray_one_free["wall_s"], 2),
            "speedup_1_to_2_cpus": round(ray_one["wall_s"] / ray_two["wall_s"], 3),
            "speedup_1_to_2_cpus_after_startup": round(steady_seconds(ray_one) / steady_seconds(ray_two), 3),
            "speedup_target": 1.6,
            "driver_peak_rss_mib": {str(k): round(v, 1) for k, v in rss.items()},
            "driver_rss_ratio": round(rss[large] / rss[small], 3),
            "driver_rss_target": 1.2,
        }))
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_detector(sys.argv[3:], sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--steady":
        steady_pipeline(sys.argv[3], sys.argv[2])
    else:
        main()

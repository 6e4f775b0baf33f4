"""Retrieval evaluation of a checkpoint: ``evaluate(shards, checkpoint)``.

Embeds every video and caption of a dataset (hard negatives included) with
the Finsta-augmented branch and with the host alone (no scene graphs), then
reports, for each:

* ``t2v`` — each real caption ranks every video; ``v2t`` — each video ranks
  every real caption, the rank of its best-ranked own caption counts.
  R@1/5/10 in percent, median (MdR) and mean (MnR) rank.
* ``hard_negatives`` — the hard-negative retrieval set. For a real caption
  ``c`` of video ``v`` with perturbations ``N(c)`` (swapped subject/object,
  reversed event order, changed relation or adverb), the **t2v** rank is

      1 + #{v' ≠ v : s(c, v') ≥ s(c, v)} + #{n ∈ N(c) : s(n, v) ≥ s(c, v)}

  i.e. text→video retrieval in which the true pair must also beat every
  perturbed caption paired with the true video (each video's gallery entry is
  contested by the query's hard negatives).
  Only captions with at least one negative are queries. **v2t**: each video
  ranks all real captions plus all hard negatives. **pair_accuracy**: the
  fraction of ``(c, n)`` pairs with ``s(c, v) > s(n, v)``, also ``by_type``.

Every rank is pessimistic: an exact tie with the true item, and a NaN score on
either side, count as beating it (a model that outputs constants or NaN ranks
last, never first), and a pair whose score is NaN is a loss.

Top-level keys describe the Finsta branch; ``"no_sg"`` holds the same
metrics for the host (the SG-free model ``export`` ships, with its own score);
for a host-only checkpoint and for an exported host both are the host. An
exported host is evaluated from host features only (no scene-graph column is
read). ``"warnings"`` lists what makes the figures suspect, e.g. evaluated videos
that are also in the checkpoint's training shards (the checkpoint records their
path; :func:`training_overlap`).

Example::

    report = evaluate("out/test", "runs/a")
    report["hard_negatives"]["t2v"]["R@1"], report["no_sg"]["t2v"]["R@1"]
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finsta_model.checkpoint import load_checkpoint
from finsta_model.data import ShardStream, make_loader
from finsta_model.host import cat_texts, cat_videos
from finsta_model.host_data import host_batches
from finsta_model.model import FinstaModel
from finsta_model.train import resolve_device
from schemas.errors import UserError
from schemas.options import diff, diff_text
from schemas.storage import location
from schemas.store import open_dataset


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MnR of 1-based ranks."""
    if len(ranks) == 0:
        return {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": float("nan"), "MnR": float("nan")}
    return {"R@1": round(100 * float((ranks <= 1).mean()), 2), "R@5": round(100 * float((ranks <= 5).mean()), 2),
            "R@10": round(100 * float((ranks <= 10).mean()), 2), "MdR": float(np.median(ranks)),
            "MnR": round(float(ranks.mean()), 2)}


def retrieval_metrics(video: np.ndarray, text: np.ndarray, cap_video: np.ndarray, neg_of: np.ndarray,
                      neg_type: list[str]) -> dict[str, Any]:
    """All metrics of the module docstring from embeddings (rows L2-normalised): cosine scores."""
    return score_metrics(text @ video.T, cap_video, neg_of, neg_type)


def beats(scores: np.ndarray, reference: np.ndarray | float) -> np.ndarray:
    """Which ``scores`` rank at or above ``reference``: ties and NaN on either side count against the
    reference (the pessimistic rank of the module docstring)."""
    return (scores >= reference) | np.isnan(scores) | np.isnan(reference)


def score_metrics(sim: np.ndarray, cap_video: np.ndarray, neg_of: np.ndarray, neg_type: list[str]
                  ) -> dict[str, Any]:
    """All metrics of the module docstring from a score matrix ``sim [captions, videos]``."""
    real = np.flatnonzero(neg_of < 0)
    n_text = sim.shape[0]
    own = sim[np.arange(n_text), cap_video]                       # s(caption, its video)
    others = np.ones(sim.shape, bool)                              # every (caption, video) but its own
    others[np.arange(n_text), cap_video] = False
    beaten = (beats(sim, own[:, None]) & others).sum(1)           # other videos at or above the own one
    t2v = 1 + beaten[real]
    v2t_ranks = []
    video_caps = defaultdict(list)
    for c in real:
        video_caps[cap_video[c]].append(c)
    for v, caps in video_caps.items():
        rivals = np.setdiff1d(real, caps)
        best = sim[caps, v].max()                                  # NaN if any own caption scores NaN
        v2t_ranks.append(1 + int(beats(sim[rivals, v], best).sum()))
    result: dict[str, Any] = {"t2v": rank_metrics(t2v), "v2t": rank_metrics(np.array(v2t_ranks))}

    negatives = defaultdict(list)
    for c in np.flatnonzero(neg_of >= 0):
        negatives[int(neg_of[c])].append(int(c))
    hn_t2v, wins, by_type = [], [], defaultdict(list)
    for c, negs in negatives.items():
        v = cap_video[c]
        beaten_by_negatives = int(beats(sim[negs, v], own[c]).sum())
        hn_t2v.append(1 + int(beaten[c]) + beaten_by_negatives)
        for n in negs:
            win = bool(own[c] > sim[n, v])                         # False when either is NaN
            wins.append(win)
            by_type[neg_type[n] or "unknown"].append(win)
    hn_v2t = []
    all_texts = np.arange(n_text)
    for v, caps in video_caps.items():
        best = sim[caps, v].max()
        rivals = np.setdiff1d(all_texts, caps)
        hn_v2t.append(1 + int(beats(sim[rivals, v], best).sum()))
    result["hard_negatives"] = {
        "t2v": rank_metrics(np.array(hn_t2v)), "v2t": rank_metrics(np.array(hn_v2t)),
        "pair_accuracy": round(100 * float(np.mean(wins)), 2) if wins else float("nan"),
        "by_type": {k: round(100 * float(np.mean(w)), 2) for k, w in sorted(by_type.items())},
        "queries": len(hn_t2v), "negatives": len(wins)}
    return result


@torch.no_grad()
def embed_dataset(model: FinstaModel, shards: str | Path, device: torch.device, batch_size: int,
                  branches: tuple[str, ...], whole_video_windows: bool = False) -> dict[str, Any]:
    """Per branch, the score matrix of every caption against every video: ``"fused"`` = the Finsta score
    (pooled fused cosine, plus ``fine_grained_weight × fine(c, v)`` with a fine-grained model), ``"host"``
    = the host's own score (pooled cosine + λ_h · token late interaction).
    ``whole_video_windows`` reads the fused branch's video units over the whole video instead of the
    caption's window (a diagnostic: how much of the fine-grained score rests on the caption's time stamps)."""
    stream = ShardStream(shards, batch_size, mode="eval", hard_negatives=True,
                         label_buckets=model.config.label_buckets)
    fused = {"video": [], "text": []}
    host_texts, host_videos = [], []
    cap_video, neg_of, neg_type, keys = [], [], [], []
    text_units, video_units = [], []
    fine = model.uses_fine_grained and "fused" in branches
    autocast = _autocast(device)
    for batch in make_loader(stream, 0):
        offset_v, offset_c = len(keys), len(cap_video)
        keys.extend(batch.keys)
        cap_video.extend((batch.cap_video + offset_v).tolist())
        neg_of.extend(torch.where(batch.cap_neg_of >= 0, batch.cap_neg_of + offset_c, -1).tolist())
        neg_type.extend(batch.neg_types)
        batch = batch.to(device)
        with autocast:
            if "host" in branches:
                text, video = model.host_units(batch)
                host_texts.append(text)
                host_videos.append(video)
            if "video_side" in branches and not fine:     # an exported video-side model: TSG units only
                text_units.append(model.caption_units(batch))
            if "fused" in branches:
                if fine:
                    video, text, t_units, v_units = model.retrieval_units(batch)
                    text_units.append(t_units)
                    video_units.append(v_units)
                else:
                    video, text = model.embed(batch, "fused")
                fused["video"].append(video.float())
                fused["text"].append(text.float())
    result = {"scores": {}, "cap_video": np.array(cap_video, np.int64), "neg_of": np.array(neg_of, np.int64),
              "neg_type": neg_type, "keys": keys}
    if "host" in branches and host_texts:
        with autocast:
            result["scores"]["host"] = model.host.score(cat_texts(host_texts), cat_videos(host_videos)).float().cpu().numpy()
    if "video_side" in branches and text_units:
        with autocast:
            videos = cat_videos(host_videos)
            result["scores"]["video_side"] = torch.cat([
                model.video_side_scores(units, text, videos) for units, text in zip(text_units, host_texts)
            ]).float().cpu().numpy()
    if "fused" in branches and fused["video"]:
        pooled = (torch.cat(fused["text"]) @ torch.cat(fused["video"]).T).cpu().numpy()
        if fine:
            if whole_video_windows:
                for units in text_units:
                    units.window = torch.stack([torch.zeros_like(units.window[:, 0]),
                                                torch.full_like(units.window[:, 1], 1 << 30)], dim=1)
            pooled = pooled + fine_score_matrix(model, text_units, video_units, autocast)
        result["scores"]["fused"] = pooled
    return result


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)


@torch.no_grad()
def fine_score_matrix(model: FinstaModel, text_units: list, video_units: list, autocast,
                      chunk: int = 64) -> np.ndarray:
    """Every caption (of every batch) against every video (of every batch), ``chunk`` captions at a time."""
    rows = []
    for texts in text_units:
        for lo in range(0, len(texts), chunk):
            part = texts.slice(lo, lo + chunk)
            with autocast:
                rows.append(torch.cat([model.fine_scores(part, videos).float() for videos in video_units],
                                      dim=1).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def training_overlap(shards: str | Path, train_shards: str | None) -> str | None:
    """A warning when the evaluated dataset shares sample keys with the training shards a checkpoint
    records (``state.json["train_shards"]``); ``None`` when it shares none or those shards are gone."""
    if not train_shards or not (location(train_shards) / "manifest.json").is_file():
        return None
    try:
        trained = set(open_dataset(train_shards).keys())
    except UserError:
        return None
    keys = open_dataset(shards).keys()
    shared = sum(1 for key in keys if key in trained)
    if not shared:
        return None
    return (f"{shared} of the {len(keys)} evaluated videos ({100 * shared / max(1, len(keys)):.0f} %) are in the "
            f"checkpoint's training shards ({train_shards}): these are not held-out figures")


def check_host(shards: str | Path, trained_on: dict[str, Any] | None, what: str) -> dict[str, int]:
    """The shards' feature dims, after checking they were made by the host ``what`` was trained on."""
    manifest = open_dataset(shards).manifest
    made_by = manifest.get("host")
    if made_by != trained_on:
        changes = diff_text(diff(trained_on or {}, made_by or {}))
        raise UserError(f"{shards} was built with another host than {what} was trained on ({changes}); "
                        f"evaluate on shards built with the same embed_visual / embed_text settings")
    return dict(manifest["feature_dims"])


def evaluate(shards: str | Path, checkpoint: str | Path, device: str = "cpu", batch_size: int = 64,
             whole_video_windows: bool = False) -> dict[str, Any]:
    """The report described in the module docstring. ``checkpoint``: a run or checkpoint folder, or an
    exported host (``export``; then only host features are read). ``whole_video_windows``: see
    :func:`embed_dataset`."""
    from finsta_model.export import is_exported_host
    if is_exported_host(checkpoint):
        return evaluate_host(shards, checkpoint, device, batch_size)
    ckpt = load_checkpoint(checkpoint)
    overlap = training_overlap(shards, ckpt.state.get("train_shards"))
    dims = check_host(shards, ckpt.state.get("host"), f"checkpoint {ckpt.path}")
    if dims != ckpt.dims:
        raise UserError(f"{shards} has feature dims {dims}, the checkpoint was trained on {ckpt.dims}")
    dev = resolve_device(device)
    if dev.type == "cpu" and ckpt.config.threads > 0:
        torch.set_num_threads(ckpt.config.threads)
    model = FinstaModel(ckpt.config, dims)
    model.load_state_dict(ckpt.model)
    model.to(dev).eval()
    branches = ("fused", "host") if ckpt.config.use_sg else ("host",)
    if model.uses_video_side:
        branches += ("video_side",)
    data = embed_dataset(model, shards, dev, batch_size, branches, whole_video_windows)
    if not len(data["keys"]) or not (data["neg_of"] < 0).any():
        raise UserError(f"{shards} holds no video with a real caption to evaluate on")
    args = (data["cap_video"], data["neg_of"], data["neg_type"])
    main = score_metrics(data["scores"][branches[0]], *args)
    host = main if len(branches) == 1 else score_metrics(data["scores"]["host"], *args)
    side = {"video_side": score_metrics(data["scores"]["video_side"], *args)} if "video_side" in branches else {}
    fine = model.uses_fine_grained
    return {**main, "no_sg": host, **side, "branch": branches[0], "uses_sg": ckpt.config.use_sg,
            "score": ("pooled+fine" if fine else "pooled") if ckpt.config.use_sg else _host_score_name(model.host),
            "host_score": _host_score_name(model.host),
            "fine_grained_weight": ckpt.config.fine_grained_weight if fine else 0.0,
            "fine_window": ("whole video" if whole_video_windows else "caption") if fine else None,
            "checkpoint": str(ckpt.path), "step": ckpt.step, "videos": len(data["keys"]),
            "captions": int((data["neg_of"] < 0).sum()), "hard_negative_captions": int((data["neg_of"] >= 0).sum()),
            "warnings": [overlap] if overlap else []}


def _host_score_name(host) -> str:
    return "pooled+late" if host.fine_weight else "pooled"


@torch.no_grad()
def evaluate_host(shards: str | Path, path: str | Path, device: str = "cpu", batch_size: int = 64) -> dict[str, Any]:
    """:func:`evaluate` for an exported host: reads host features only (``finsta_model.host_data``)."""
    from finsta_model.export import load_host
    host = load_host(path, str(resolve_device(device)))
    dims = check_host(shards, host.info.get("host"), f"the exported host {path}")
    wanted = host.info["feature_dims"]
    if any(dims.get(k, 0) != v for k, v in wanted.items()):
        raise UserError(f"{shards} has feature dims {dims}, the exported host reads {wanted}")
    if "video_side" in host.info:
        return _evaluate_video_side(shards, path, host.device, batch_size)
    texts, videos, cap_video, neg_of, neg_type, keys = [], [], [], [], [], []
    for batch in host_batches(shards, batch_size):
        offset_v, offset_c = len(keys), len(cap_video)
        keys.extend(batch.keys)
        cap_video.extend((batch.cap_video + offset_v).tolist())
        neg_of.extend(torch.where(batch.cap_neg_of >= 0, batch.cap_neg_of + offset_c, -1).tolist())
        neg_type.extend(batch.neg_types)
        batch = batch.to(host.device)
        texts.append(host.model.text(batch.cap_feat, batch.tok_feat, batch.tok_mask))
        videos.append(host.model.video(batch.frame_feat, batch.frame_mask, batch.patch_feat))
    neg_of = np.array(neg_of, np.int64)
    if not keys or not (neg_of < 0).any():
        raise UserError(f"{shards} holds no video with a real caption to evaluate on")
    scores = host.model.score(cat_texts(texts), cat_videos(videos)).float().cpu().numpy()
    report = score_metrics(scores, np.array(cap_video, np.int64), neg_of, neg_type)
    trained = host.info.get("trained", {})
    overlap = training_overlap(shards, trained.get("train_shards"))
    return {**report, "no_sg": report, "branch": "host", "uses_sg": False, "exported": True,
            "score": _host_score_name(host.model), "host_score": _host_score_name(host.model),
            "trained_with_sg": bool(trained.get("config", {}).get("use_sg", False)),
            "checkpoint": str(path), "step": trained.get("step"), "videos": len(keys),
            "captions": int((neg_of < 0).sum()), "hard_negative_captions": int((neg_of >= 0).sum()),
            "warnings": [overlap] if overlap else []}


def _evaluate_video_side(shards: str | Path, path: str | Path, device: torch.device, batch_size: int
                         ) -> dict[str, Any]:
    """:func:`evaluate_host` for an ``export --video-sg-free`` folder: the host's report, and the video-side
    SG-free score's as ``video_side`` (the captions' TSGs against the videos' host features; no video
    scene graph is read)."""
    from finsta_model.export import load_video_side
    exported = load_video_side(path, str(device))
    data = embed_dataset(exported.model, shards, device, batch_size, ("host", "video_side"))
    neg_of = data["neg_of"]
    if not len(data["keys"]) or not (neg_of < 0).any():
        raise UserError(f"{shards} holds no video with a real caption to evaluate on")
    args = (data["cap_video"], neg_of, data["neg_type"])
    report = score_metrics(data["scores"]["host"], *args)
    trained = exported.host.info["trained"]
    overlap = training_overlap(shards, trained.get("train_shards"))
    host_score = _host_score_name(exported.model.host)
    return {**report, "no_sg": report, "video_side": score_metrics(data["scores"]["video_side"], *args),
            "branch": "host", "uses_sg": False, "exported": True, "score": host_score, "host_score": host_score,
            "trained_with_sg": True, "checkpoint": str(path), "step": trained.get("step"),
            "videos": len(data["keys"]), "captions": int((neg_of < 0).sum()),
            "hard_negative_captions": int((neg_of >= 0).sum()), "warnings": [overlap] if overlap else []}


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate`'s report."""
    head = f"{'':28}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MdR':>8}{'MnR':>9}"
    lines = [f"warning: {warning}" for warning in report.get("warnings", [])]
    lines += [f"checkpoint {report['checkpoint']} (step {report['step']}); {report['videos']} videos, "
              f"{report['captions']} captions, {report['hard_negative_captions']} hard negatives", head]
    rows = [("", report)] if not report["uses_sg"] else [("finsta ", report), ("host (no SG) ", report["no_sg"])]
    if "video_side" in report:
        rows.append(("video-side (no DSG) ", report["video_side"]))
    negatives = report["hard_negative_captions"] > 0
    for name, block in rows:
        tables = [("t2v", block["t2v"]), ("v2t", block["v2t"])]
        if negatives:
            tables += [("hard-neg t2v", block["hard_negatives"]["t2v"]), ("hard-neg v2t", block["hard_negatives"]["v2t"])]
        for label, metrics in tables:
            lines.append(f"{name + label:28}{metrics['R@1']:>8.2f}{metrics['R@5']:>8.2f}{metrics['R@10']:>8.2f}"
                         f"{metrics['MdR']:>8.1f}{metrics['MnR']:>9.2f}")
        if negatives:
            lines.append(f"{name + 'hard-neg pair accuracy':28}{block['hard_negatives']['pair_accuracy']:>8.2f}  "
                         + ", ".join(f"{k} {v:.1f}" for k, v in block["hard_negatives"]["by_type"].items()))
        else:   # 0.00 and nan would read as results
            lines.append(f"{name + 'hard-neg':28}no hard negatives (built with parse_captions.hard_negatives=0?)")
    return "\n".join(lines)

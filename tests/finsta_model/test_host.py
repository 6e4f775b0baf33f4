"""The host (SG-free model): its score, padding, export / load_host, and an exported host's eval that never
reads a scene-graph column; the distillation terms that teach it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from finsta_model import load_host
from finsta_model.config import TrainConfig
from finsta_model.evaluate import evaluate, format_report
from finsta_model.export import export_host
from finsta_model.host import HostModel, HostText, HostVideo, cat_texts, cat_videos
from finsta_model.host_data import host_batches
from finsta_model.losses import score_distillation
from finsta_model.train import train
from schemas.errors import UserError
from schemas.store import sha256_file

DIMS = {"frame": 6, "frame_patch": 5, "caption": 4, "caption_token": 3}
TINY = TrainConfig(dim=16, heads=2, gtrm_layers=1, rgtrm_layers=2, steps=3, batch_size=4, log_every=1,
                   checkpoint_every=3, shuffle_buffer=6, warmup_steps=1, fine_grained_weight=1.0)


def _host(**changes) -> HostModel:
    torch.manual_seed(0)
    return HostModel(DIMS, **{"dim": 8, "heads": 2, "layers": 1, "dropout": 0.0, "fine_weight": 1.0, **changes}).eval()


def test_late_interaction_by_hand():
    e = torch.eye(3)
    text = HostText(pooled=torch.zeros(1, 3), tokens=torch.stack([e[0], e[1]])[None], mask=torch.tensor([[True, True]]))
    video = HostVideo(pooled=torch.zeros(2, 3), tokens=torch.stack([torch.stack([e[0], e[2]]),
                                                                    torch.stack([e[1], e[1]])]),
                      mask=torch.ones(2, 2, dtype=torch.bool), cells=0, frame_index=torch.arange(2))
    # caption tokens (x, y): video 0 has x (1) but not y (0) → 0.5; video 1 has y only → 0.5
    assert torch.allclose(_host().late(text, video), torch.tensor([[0.5, 0.5]]))
    text.mask[0, 1] = False                                             # only x counts now
    assert torch.allclose(_host().late(text, video), torch.tensor([[1.0, 0.0]]))


def test_scores_do_not_depend_on_padding_or_batching():
    host = _host()
    g = torch.Generator().manual_seed(1)
    frames, patches = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 4, 5, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    tokens, tmask = torch.randn(3, 7, 3, generator=g), torch.ones(3, 7, dtype=torch.bool)
    tmask[1, 4:] = False
    captions = torch.randn(3, 4, generator=g)
    with torch.no_grad():
        both = host.score(host.text(captions, tokens, tmask), host.video(frames, mask, patches))
        alone = host.score(host.text(captions[1:2], tokens[1:2, :4], tmask[1:2, :4]),
                           host.video(frames[1:, :2], mask[1:, :2], patches[1:, :2]))
        garbage = tokens.clone()
        garbage[1, 4:] = 99.0                                           # padding content must not matter
        again = host.score(host.text(captions, garbage, tmask), host.video(frames, mask, patches))
        joined = host.score(cat_texts([host.text(captions[:1], tokens[:1], tmask[:1]),
                                       host.text(captions[1:2], tokens[1:2, :4], tmask[1:2, :4]),
                                       host.text(captions[2:], tokens[2:], tmask[2:])]),
                            cat_videos([host.video(frames[:1], mask[:1], patches[:1]),
                                        host.video(frames[1:, :2], mask[1:, :2], patches[1:, :2])]))
    assert torch.allclose(both[1, 1], alone[0, 0], atol=1e-5)
    assert torch.allclose(both, again, atol=1e-5) and torch.allclose(both, joined, atol=1e-5)
    pooled_only = _host(fine_weight=0.0)
    with torch.no_grad():
        t, v = pooled_only.text(captions, tokens, tmask), pooled_only.video(frames, mask, patches)
        cos = torch.nn.functional.normalize(t.pooled, dim=-1) @ torch.nn.functional.normalize(v.pooled, dim=-1).T
        assert torch.allclose(pooled_only.score(t, v), cos, atol=1e-6)


def test_long_videos_are_read_at_evenly_spaced_frames():
    host = _host(max_frames=4)
    video = host.video(torch.randn(1, 10, 6), torch.ones(1, 10, dtype=torch.bool), torch.randn(1, 10, 4, 5))
    assert video.frame_index.tolist() == [0, 3, 6, 9] and video.tokens.shape[1] == 4 * 5


def test_score_distillation_is_zero_only_when_the_rankings_agree():
    teacher = torch.tensor([[1.0, 0.2, 0.1], [0.3, 0.9, 0.0], [0.8, 0.1, 0.1]])   # caption 2 perturbs 0
    cap_video, neg_of = torch.tensor([0, 1, 0]), torch.tensor([-1, -1, 0])
    assert score_distillation(teacher.clone(), teacher, cap_video, neg_of, 0.1) < 1e-6
    student = teacher.clone().requires_grad_(True)
    swapped = teacher.clone()
    swapped[[0, 2], 0] = swapped[[2, 0], 0]                   # the perturbation now wins on the true video
    loss = score_distillation(student * 0 + swapped, teacher, cap_video, neg_of, 0.1)
    assert loss > 0.5
    score_distillation(student, teacher + 1.0, cap_video, neg_of, 0.1).backward()   # a shift changes nothing
    assert student.grad.abs().max() < 1e-5


@pytest.fixture(scope="module")
def trained(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("host")
    run = root / "run"
    train(small_dataset, run, TINY, progress=False)
    export_host(run, root / "exported")
    return run, root / "exported"


def test_losses_teach_the_host_from_every_term(small_dataset):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    stream = ShardStream(small_dataset, batch_size=6, seed=0)
    batch = next(iter(make_loader(stream, 0)))
    model = FinstaModel(TINY.replace(dropout=0.0), stream.dims).train()
    _, parts = model.losses(batch)
    assert {"nce", "host_nce", "osc", "ptc", "distill", "score_distill", "align_distill"} <= set(parts)
    for term in ("score_distill", "align_distill"):
        zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight",
                                 "osc_weight", "ptc_weight")}
        only = FinstaModel(TINY.replace(dropout=0.0, **{**zero, f"{term}_weight": 1.0}), stream.dims)
        only.load_state_dict(model.state_dict())
        host_only = FinstaModel(TINY.replace(dropout=0.0, **zero), stream.dims)
        host_only.load_state_dict(model.state_dict())
        only.losses(batch)[0].backward()
        host_only.losses(batch)[0].backward()
        # same weights, no dropout: the difference of the gradients is the term's own gradient
        term_grad = {name: p.grad - dict(host_only.named_parameters())[name].grad
                     for name, p in only.named_parameters() if p.grad is not None}
        host_inputs = [g for name, g in term_grad.items() if name.startswith(("host.token_in", "host.patch_in"))]
        assert host_inputs and all(g.abs().sum() > 0 for g in host_inputs), term
        teacher = [g for name, g in term_grad.items() if name.startswith(("gtrm", "dsg", "fine", "video_adapter"))]
        assert teacher and all(g.abs().max() < 1e-7 for g in teacher), f"{term} must not move the teacher"


def test_export_load_host_and_sg_free_eval_agree_with_the_run(trained, small_dataset):
    run, exported = trained
    info = json.loads((exported / "host.json").read_text())
    assert info["format"] == "finsta-host" and info["feature_dims"] == {
        "frame": 24, "frame_patch": 24, "caption": 12, "caption_token": 12}
    assert info["cells_per_frame"] == 4 and info["trained"]["step"] == 3
    assert set(p.name for p in exported.iterdir()) == {"host.json", "host.safetensors"}
    in_run = evaluate(small_dataset, run)["no_sg"]
    alone = evaluate(small_dataset, exported)
    assert alone["exported"] and not alone["uses_sg"] and alone["trained_with_sg"]
    for key in ("t2v", "v2t", "hard_negatives"):
        assert alone[key] == in_run[key]
    # the documented API: embed host features of "new" videos and captions and score them
    host = load_host(exported)
    batch = next(host_batches(small_dataset, 24))
    tokens = [batch.tok_feat[c, batch.tok_mask[c]].numpy() for c in range(len(batch.cap_feat))]
    frames = [batch.frame_feat[v, batch.frame_mask[v]].numpy() for v in range(len(batch.keys))]
    cells = [batch.patch_feat[v, batch.frame_mask[v]].reshape(-1, 24).numpy() for v in range(len(batch.keys))]
    scores = host.score(host.embed_captions(batch.cap_feat.numpy(), tokens), host.embed_videos(frames, cells))
    with torch.no_grad():
        direct = host.model.score(host.model.text(batch.cap_feat, batch.tok_feat, batch.tok_mask),
                                  host.model.video(batch.frame_feat, batch.frame_mask, batch.patch_feat))
    np.testing.assert_allclose(scores, direct.numpy(), atol=1e-5)
    vectors = host.video_vectors(host.embed_videos(frames, cells))
    assert vectors.shape == (24, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def _strip_scene_graphs(source: Path, target: Path) -> Path:
    """A copy of a dataset with every scene-graph list emptied and the SG-only Zarr arrays deleted."""
    shutil.copytree(source, target)
    for shard in (target / "shards").glob("shard-*"):
        table = pa.ipc.open_file(pa.memory_map(str(shard / "samples.arrow"))).read_all()
        rows = table.to_pylist()
        for row in rows:
            for key in ("frames", "detections", "attributes", "relations", "tracks", "track_relations"):
                row["dsg"][key] = []
            for hsg in row["hsgs"]:
                hsg["tsg"].update(nodes=[], edges=[], text="")
                hsg.update(links=[], frame_window=[0, 0])
        with pa.OSFile(str(shard / "samples.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(pa.Table.from_pylist(rows, schema=table.schema))
        for array in ("detection", "text_node"):
            shutil.rmtree(shard / "features.zarr" / array)
    # an intentional edit: each shard.json is given the new digests and sizes (readers check them) and loses
    # the deleted files; its _DONE is re-sealed
    for folder in (target / "shards").glob("shard-*"):
        entry = json.loads((folder / "shard.json").read_text())
        kept = [rel for rel in entry["files"] if (folder / rel).is_file()]
        entry["files"] = {rel: sha256_file(folder / rel) for rel in kept}
        entry["sizes"] = {rel: (folder / rel).stat().st_size for rel in kept}
        (folder / "shard.json").write_text(json.dumps(entry))
        (folder / "_DONE").write_text(sha256_file(folder / "shard.json"))
    return target


def test_exported_host_reads_no_scene_graph_column(trained, small_dataset, tmp_path):
    _, exported = trained
    stripped = _strip_scene_graphs(small_dataset, tmp_path / "no-sg")
    a, b = evaluate(small_dataset, exported), evaluate(stripped, exported)
    assert {k: a[k] for k in ("t2v", "v2t", "hard_negatives")} == {k: b[k] for k in ("t2v", "v2t", "hard_negatives")}


def test_a_mix_of_hosts_is_refused(trained, small_dataset, tmp_path):
    run, exported = trained
    other = tmp_path / "other"
    shutil.copytree(small_dataset, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["host"] = {"embed_visual": {"name": "clip"}, "embed_text": {"name": "clip"}}
    (other / "manifest.json").write_text(json.dumps(manifest))
    for target in (exported, run):
        with pytest.raises(UserError, match="another host"):
            evaluate(other, target)
    with pytest.raises(UserError, match="another host"):
        train(other, run, TINY.replace(steps=5), resume=True, progress=False)
    with pytest.raises(UserError, match="no exported host"):
        load_host(tmp_path)


def test_init_host_post_trains_an_exported_host(trained, small_dataset, tmp_path):
    _, exported = trained
    # lr 0: the post-trained run's host must still be the exported one, weight for weight
    still = tmp_path / "still"
    train(small_dataset, still, TINY.replace(init_host=str(exported), lr=0.0), progress=False)
    export_host(still, tmp_path / "still-host")
    before, after = load_host(exported).model.state_dict(), load_host(tmp_path / "still-host").model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(UserError, match="other sizes"):
        train(small_dataset, tmp_path / "wider", TINY.replace(init_host=str(exported), dim=32), progress=False)
    with pytest.raises(UserError, match="no exported host"):
        train(small_dataset, tmp_path / "none", TINY.replace(init_host=str(tmp_path)), progress=False)


def test_object_slots_join_the_late_interaction():
    e = torch.eye(3)
    text = HostText(pooled=torch.zeros(1, 3), tokens=torch.stack([e[0], e[1]])[None], mask=torch.tensor([[True, True]]))
    video = HostVideo(pooled=torch.zeros(1, 3), tokens=e[0][None, None], mask=torch.ones(1, 1, dtype=torch.bool),
                      cells=0, frame_index=torch.arange(1), slots=e[1][None, None])
    assert torch.allclose(_host().late(text, video), torch.tensor([[1.0]]))         # x from a token, y from a slot
    host = _host(slots=2)
    out = host.video(torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 3, 4, 5))
    assert out.slots.shape == out.slot_states.shape == (2, 2, 8)
    assert cat_videos([out, out]).slots.shape == (4, 2, 8)


def test_representation_distillation_and_the_video_side_score_move_the_host_never_the_teacher(small_dataset):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    stream = ShardStream(small_dataset, batch_size=6, seed=0)
    batch = next(iter(make_loader(stream, 0)))
    zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                             "osc_weight", "ptc_weight")}
    config = TINY.replace(dropout=0.0, host_slots=2, **zero)
    for term, part in (("rep_distill_weight", "rep_distill"), ("video_side_weight", "video_side")):
        only = FinstaModel(config.replace(**{term: 1.0}), stream.dims)
        without = FinstaModel(config, stream.dims)
        without.load_state_dict(only.state_dict(), strict=False)      # the rep heads exist only with the term
        loss, parts = only.losses(batch)
        assert parts[part] > 0
        loss.backward()
        without.losses(batch)[0].backward()
        others = dict(without.named_parameters())
        grad = {name: p.grad - (others[name].grad if others[name].grad is not None else 0)
                for name, p in only.named_parameters() if p.grad is not None and name in others}
        assert all(grad[name].abs().sum() > 0 for name in ("host.patch_in.1.weight", "host.frame_in.1.weight")), term
        assert only.rep_heads["slot"].weight.grad.abs().sum() > 0, term
        teacher = [g for name, g in grad.items() if name.startswith(("gtrm", "dsg", "fine", "video_adapter", "node_align"))]
        assert teacher and all(g.abs().max() < 1e-7 for g in teacher), f"{term} must not move the teacher"


def test_slot_box_supervision_trains_the_slots_attention_with_or_without_the_teacher(small_dataset, monkeypatch):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    stream = ShardStream(small_dataset, batch_size=6, seed=0)
    batch = next(iter(make_loader(stream, 0)))
    zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                             "osc_weight", "ptc_weight")}
    with pytest.raises(UserError, match="host_slots"):
        TINY.replace(slot_box_weight=1.0).validate()
    for use_sg in (True, False):
        config = TINY.replace(dropout=0.0, host_slots=2, use_sg=use_sg, **zero)
        torch.manual_seed(0)
        boxes = FinstaModel(config.replace(slot_box_weight=1.0), stream.dims)
        without = FinstaModel(config, stream.dims)
        without.load_state_dict(boxes.state_dict())
        loss, parts = boxes.losses(batch)
        assert parts["slot_box"] > 0 and "slot_box" not in without.losses(batch)[1]
        loss.backward()
        without.losses(batch)[0].backward()
        others = dict(without.named_parameters())
        grad = {name: p.grad - (others[name].grad if others[name].grad is not None else 0)
                for name, p in boxes.named_parameters() if p.grad is not None}
        # the term reaches the slot queries and the cells the slots read; the teacher is never moved
        assert grad["host.slot_readout.queries"].abs().sum() > 0 and grad["host.patch_in.1.weight"].abs().sum() > 0
        teacher = [g for name, g in grad.items() if not name.startswith("host.")]
        assert all(g.abs().max() < 1e-7 for g in teacher), use_sg
    # with representation distillation the slots learn the embeddings of the tracks whose boxes they look at
    config = TINY.replace(dropout=0.0, host_slots=2, rep_distill_weight=1.0, slot_box_weight=1.0, **zero)
    model = FinstaModel(config, stream.dims)
    seen = []
    import finsta_model.model as model_module
    original = model_module.representation_distillation
    monkeypatch.setattr(model_module, "representation_distillation", lambda *a: seen.append(a[-1]) or original(*a))
    model.losses(batch)
    host_v = model.host_units(batch)[1]
    assert seen and all(torch.equal(x, y) for x, y in zip(seen[0], model._slot_boxes(batch, host_v)[1]))


def test_a_host_with_slots_trains_exports_and_evaluates_the_same(trained, small_dataset, tmp_path, capsys):
    import cli
    from dataclasses import replace
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.export import load_video_side
    run = tmp_path / "run"
    train(small_dataset, run, TINY.replace(host_slots=2, rep_distill_weight=1.0, video_side_weight=1.0), progress=False)
    export_host(run, tmp_path / "host")
    info = json.loads((tmp_path / "host" / "host.json").read_text())
    assert info["arguments"]["slots"] == 2
    report = evaluate(small_dataset, run)
    in_run, alone = report["no_sg"], evaluate(small_dataset, tmp_path / "host")
    assert {k: alone[k] for k in ("t2v", "hard_negatives")} == {k: in_run[k] for k in ("t2v", "hard_negatives")}
    # the video-side SG-free score (captions' TSGs against the host's slots) is reported beside the others
    assert report["video_side"]["t2v"] != in_run["t2v"] and "video-side (no DSG) hard-neg t2v" in format_report(report)
    # export --video-sg-free: the same host plus the caption side of the video-side score, which evaluates
    # exactly as inside the run and reads no video scene graph
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "side"), "--video-sg-free"]) == 0
    side = evaluate(small_dataset, tmp_path / "side")
    for name in ("video_side", "no_sg"):
        assert {k: side[name][k] for k in ("t2v", "hard_negatives")} == \
            {k: report[name][k] for k in ("t2v", "hard_negatives")}, name
    assert "video-side (no DSG) hard-neg t2v" in format_report(side)
    exported = load_video_side(tmp_path / "side")
    batch = next(iter(make_loader(ShardStream(small_dataset, batch_size=8, mode="eval"), 0)))
    no_dsg = replace(batch, det_feat=torch.randn_like(batch.det_feat), det_box=torch.rand_like(batch.det_box),
                     track_video=batch.track_video.flip(0), edge_rel=torch.zeros_like(batch.edge_rel))
    assert np.array_equal(exported.score(batch), exported.score(no_dsg))
    with pytest.raises(UserError, match="no video-side model"):
        load_video_side(tmp_path / "host")
    assert cli.main(["export", "--checkpoint", str(trained[0]), "--out", str(tmp_path / "x"), "--video-sg-free"]) == 2
    assert "video_side_weight" in capsys.readouterr().err
    # a host exported before slots existed (no "slots" in host.json) loads as a host without slots
    old = tmp_path / "old"
    shutil.copytree(trained[1], old)
    info = json.loads((old / "host.json").read_text())
    del info["arguments"]["slots"]
    (old / "host.json").write_text(json.dumps(info))
    assert load_host(old).model.slots == 0


@pytest.fixture(scope="module")
def partly_captioned(tmp_path_factory) -> Path:
    """8 captioned videos and 4 without captions (what `make-synthetic --uncaptioned` builds), 3 shards."""
    import random
    from finsta_samples import DIMS as SAMPLE_DIMS, make_sample
    from schemas.store import DatasetWriter
    rng = random.Random(3)
    samples = [make_sample(rng, f"vid{i:02d}", n_captions=0 if i % 3 == 2 else 2) for i in range(12)]
    writer = DatasetWriter(tmp_path_factory.mktemp("partly") / "ds", config={"test": "partly"},
                           feature_dims=SAMPLE_DIMS)
    for start in range(0, 12, 4):
        writer.write_shard(samples[start:start + 4], failures=[])
    return writer.root


def test_uncaptioned_videos_ride_along_and_train_only_the_representation_distillation(partly_captioned):
    from finsta_model.data import ShardStream, make_loader
    from finsta_model.model import FinstaModel
    uncaptioned = {f"vid{i:02d}" for i in range(12) if i % 3 == 2}
    skipped = list(make_loader(ShardStream(partly_captioned, batch_size=4, seed=0), 0))
    assert all(b.video_only is None and not uncaptioned & set(b.keys) for b in skipped)
    batches = list(make_loader(ShardStream(partly_captioned, batch_size=4, seed=0, uncaptioned=True), 0))
    assert [len(b.keys) for b in batches] == [len(b.keys) for b in skipped] == [4, 4]   # captioned per batch
    riding = [k for b in batches if b.video_only is not None for k in b.video_only.keys]
    # (those the shuffle put after the last captioned batch wait for the next epoch, as a short batch's do)
    assert len(riding) >= 2 and set(riding) <= uncaptioned and not uncaptioned & {k for b in batches for k in b.keys}
    batch = next(b for b in batches if b.video_only is not None and len(b.video_only.keys) >= 2)
    assert batch.video_only.cap_feat.shape[0] == 0

    with pytest.raises(UserError, match="rep_distill_weight"):
        TINY.replace(uncaptioned=True).validate()
    zero = {k: 0.0 for k in ("distill_weight", "score_distill_weight", "align_distill_weight", "node_distill_weight",
                             "osc_weight", "ptc_weight")}
    config = TINY.replace(dropout=0.0, host_slots=2, rep_distill_weight=1.0, **zero)
    torch.manual_seed(0)
    dims = ShardStream(partly_captioned, batch_size=4).dims
    with_videos = FinstaModel(config.replace(uncaptioned=True), dims)
    alone = FinstaModel(config, dims)
    alone.load_state_dict(with_videos.state_dict())
    loss, parts = with_videos.losses(batch)
    assert parts["rep_uncaptioned"] > 0 and "rep_uncaptioned" not in alone.losses(batch)[1]
    loss.backward()
    alone.losses(batch)[0].backward()
    others = dict(alone.named_parameters())
    grad = {name: p.grad - others[name].grad for name, p in with_videos.named_parameters()
            if p.grad is not None and others[name].grad is not None}
    assert grad["host.patch_in.1.weight"].abs().sum() > 0 and grad["rep_heads.slot.weight"].abs().sum() > 0
    teacher = [g for name, g in grad.items() if name.startswith(("gtrm", "dsg", "fine", "video_adapter", "words"))]
    assert teacher and all(g.abs().max() < 1e-7 for g in teacher), "videos without captions must not move the teacher"

"""Actor pools from the catalog: grouping by device, GPU requests, where frames travel."""
from __future__ import annotations

import pytest

from pipeline.config import BuildConfig, apply_overrides
from pipeline.plan import plan_pools
from stages.catalog import STAGES


def pools_of(*assignments):
    return plan_pools(apply_overrides(BuildConfig(), list(assignments)))


def test_cpu_only_is_one_pool_of_every_stage_in_catalog_order():
    [pool] = pools_of()
    assert pool.stage_names == [stage.name for stage in STAGES]
    assert pool.resources.gpus == 0 and pool.batch_size == 1 and pool.workers == 1
    assert pool.drop_images_after == "embed_visual" and not pool.images_leave


def test_a_cuda_detector_gets_its_own_gpu_pool_and_frames_follow_it():
    decode, detect, rest = pools_of("detect.device=cuda", "detect.gpus=0.5", "run.workers=3")
    assert (decode.stage_names, detect.stage_names) == (["decode"], ["detect"])
    assert rest.stage_names[0] == "segment_shots" and rest.stage_names[-1] == "embed_text"
    assert detect.resources.gpus == 0.5 and decode.resources.gpus == rest.resources.gpus == 0
    assert detect.workers == 0 and detect.actors(cluster_gpus=2) == 4   # 0 = as many as the GPUs hold
    assert decode.workers == rest.workers == 3
    assert decode.images_leave and detect.images_leave and not rest.images_leave
    assert rest.drop_images_after == "embed_visual"


def test_text_stages_on_cuda_split_after_the_video_stages():
    video, text = pools_of("embed_text.device=cuda", "merge_hsg.scorer.device=cuda")
    assert video.stage_names[-1] == "parse_captions" and text.stage_names == ["merge_hsg", "embed_text"]
    assert text.resources.gpus == 0.25 and not video.images_leave


def test_pool_batch_is_the_smallest_stage_preference():
    pools = pools_of("run.pools=each", "parse_captions.tasks_per_batch=5")
    assert {p.name: p.batch_size for p in pools}["parse_captions"] == 5
    assert {p.name: p.batch_size for p in pools}["decode"] == 1
    [one] = pools_of("run.pools=one", "parse_captions.tasks_per_batch=5")
    assert one.batch_size == 1


def test_frames_reach_a_pixel_reading_scorer_whatever_the_pools(monkeypatch):
    monkeypatch.setenv("FINSTA_PLUGINS", "tests.pipeline.doubles")
    for mode in ("one", "each", "auto"):
        pools = pools_of(f"run.pools={mode}", "merge_hsg.scorer.name=pixel_probe_double")
        holder = next(p for p in pools if "merge_hsg" in p.stage_names)
        assert holder.drop_images_after == "merge_hsg"
        assert all(p.images_leave for p in pools[:pools.index(holder)])


@pytest.mark.parametrize("device, gpus", [("cpu", 0.0), ("cuda", 1.0), ("cuda:1", 1.0)])
def test_detect_resources_follow_its_device(device, gpus):
    from stages.detect import DetectConfig, DetectStage
    assert DetectStage(DetectConfig(device=device)).resources.gpus == gpus

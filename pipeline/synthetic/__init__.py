"""The synthetic video–caption world: generator, captions with gold TSGs, ground truth.

    from pipeline.synthetic import generate, WorldConfig
    generate("out/synth", num_videos=8, seed=0, difficulty="medium")

See docs/synthetic.md for the folder layout and the truth format.
"""
from pipeline.synthetic.generate import generate, video_id
from pipeline.synthetic.world import DIFFICULTIES, WorldConfig

__all__ = ["generate", "video_id", "WorldConfig", "DIFFICULTIES"]

"""schemas/options.py: what a config's identity holds; options added after outputs existed (``added``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas.options import added, adopt_older, identity, runtime


@dataclass
class Engine:
    precision: str = added("bf16", before="f32")
    threads: int = runtime(1)


@dataclass
class Section:
    fps: float = 1.0
    engine: Engine = field(default_factory=Engine)


def test_an_added_option_at_its_older_value_is_left_out_of_the_identity():
    assert identity(Section()) == {"fps": 1.0, "engine": {"precision": "bf16"}}
    assert identity(Section(engine=Engine(precision="f32"))) == {"fps": 1.0, "engine": {}}


def test_an_older_output_continues_with_the_older_value_unless_the_user_changed_it():
    made_before = {"fps": 1.0, "engine": {}}                 # what an output made before the option holds
    cfg = Section()
    assert adopt_older(cfg, made_before) == ["engine.precision"]
    assert cfg.engine.precision == "f32" and identity(cfg) == made_before
    assert adopt_older(Section(), {"fps": 1.0, "engine": {"precision": "bf16"}}) == []   # made with it
    assert adopt_older(Section(), {"fps": 1.0}) == []                                    # section absent
    changed = Section(engine=Engine(precision="f16"))
    assert adopt_older(changed, made_before) == [] and changed.engine.precision == "f16"

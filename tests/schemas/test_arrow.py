"""Records ⇄ Arrow is lossless, for every record type (property tests)."""
from __future__ import annotations

import dataclasses
import typing

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import records
from schemas.arrow import _hints, _optional_inner, from_row, record_schema, records_to_table, table_to_records, to_row

RECORD_TYPES = [obj for obj in vars(records).values()
                if dataclasses.is_dataclass(obj) and obj is not records.SampleFeatures]

_text = st.text(max_size=12)
_float = st.floats(allow_nan=False, width=64)


def strategy_for(hint):
    inner = _optional_inner(hint)
    if inner is not None:
        return st.none() | strategy_for(inner)
    if hint is int:
        return st.integers(-2**63, 2**63 - 1)
    if hint is float:
        return _float
    if hint is str:
        return _text
    if hint is bool:
        return st.booleans()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is tuple:
        return st.tuples(*[strategy_for(a) for a in args])
    if dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        return st.builds(hint, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(hint)})
    raise TypeError(hint)


def test_every_record_type_is_covered():
    names = {cls.__name__ for cls in RECORD_TYPES}
    assert {"TextSceneGraph", "DynamicSceneGraph", "HolisticSceneGraph", "VideoSample", "FailureRecord"} <= names


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)
def test_round_trip_through_arrow_ipc(cls):
    @settings(max_examples=40, deadline=None)
    @given(st.lists(strategy_for(cls), min_size=1, max_size=3))
    def check(values):
        table = records_to_table(values, cls)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        back = pa.ipc.open_file(sink.getvalue()).read_all()
        assert back.schema.equals(record_schema(cls))
        assert table_to_records(back, cls) == values

    check()


def test_schema_follows_type_hints():
    schema = record_schema(records.Detection)
    assert schema.field("box").type == pa.list_(pa.float64(), 4)
    assert schema.field("track_id").type == pa.int64()
    assert record_schema(records.TextSceneGraph).field("start").nullable
    assert not record_schema(records.TextSceneGraph).field("text").nullable


def test_a_row_of_an_earlier_version_reads_missing_fields_as_their_defaults():
    dsg = records.DynamicSceneGraph("v", records.VideoMeta("v.mp4", 2.0, 25.0, 64, 48, "h264"),
                                    shots=[records.Shot(0, 49, 0.0, 1.96)])
    row = to_row(dsg)
    assert from_row(records.DynamicSceneGraph, row) == dsg
    del row["shots"]   # a version-3 DSG: no shots column
    assert from_row(records.DynamicSceneGraph, row).shots == []
    del row["meta"]    # a field without a default stays required
    with pytest.raises(KeyError, match="meta"):
        from_row(records.DynamicSceneGraph, row)

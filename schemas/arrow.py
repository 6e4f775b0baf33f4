"""Arrow schemas derived from the record dataclasses, and lossless conversion.

The mapping is mechanical, so the records stay the one source of truth:

==========================  =====================================
Python type hint            Arrow type
==========================  =====================================
``int`` / ``float``         ``int64`` / ``float64``
``str`` / ``bool``          ``string`` / ``bool``
``Optional[T]``             ``T``, nullable
``list[T]``                 ``list<T>``
``tuple[T, T, ...]`` (n)    ``fixed_size_list<T>[n]``
dataclass                   ``struct`` of its fields
==========================  =====================================

Example::

    >>> table = records_to_table([FailureRecord("k", "decode", "timeout", "slow")])
    >>> table_to_records(table, FailureRecord)[0].stage
    'decode'
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any, Callable, Iterable, Type, TypeVar

import pyarrow as pa

from schemas.records import FailureRecord, VideoSample

T = TypeVar("T")

_SCALARS = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def _optional_inner(hint: Any) -> Any:
    """``Optional[X]`` → ``X``; anything else → None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
        raise TypeError(f"only Optional[X] unions are supported, got {hint}")
    return None


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type for a record type hint (see the module table)."""
    inner = _optional_inner(hint)
    if inner is not None:
        return arrow_type(inner)
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return pa.list_(arrow_type(args[0]))
    if origin is tuple:
        if Ellipsis in args or len(set(args)) != 1:
            raise TypeError(f"only homogeneous fixed-length tuples are supported, got {hint}")
        return pa.list_(arrow_type(args[0]), len(args))
    if dataclasses.is_dataclass(hint):
        return pa.struct(record_fields(hint))
    raise TypeError(f"no Arrow mapping for {hint!r}")


def record_fields(cls: type) -> list[pa.Field]:
    hints = _hints(cls)
    return [pa.field(f.name, arrow_type(hints[f.name]), nullable=_optional_inner(hints[f.name]) is not None)
            for f in dataclasses.fields(cls) if f.name in hints and not f.name.startswith("_")]


def record_schema(cls: type, extra: Iterable[pa.Field] = ()) -> pa.Schema:
    return pa.schema(record_fields(cls) + list(extra))


def _to_value(hint: Any, value: Any) -> Any:
    inner = _optional_inner(hint)
    if inner is not None:
        return None if value is None else _to_value(inner, value)
    if dataclasses.is_dataclass(hint):
        return to_row(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return [_to_value(args[0], v) for v in value]
    if origin is tuple:
        return [_to_value(args[0], v) for v in value]
    return value


def _identity(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=None)
def _decoder(hint: Any) -> Callable[[Any], Any]:
    """A function turning the Arrow-side value of ``hint`` back into its Python form.

    Built once per type: a reader decodes hundreds of records per sample, so the
    type analysis must not run per value.
    """
    inner = _optional_inner(hint)
    if inner is not None:
        decode = _decoder(inner)
        return _identity if decode is _identity else (lambda v: None if v is None else decode(v))
    if dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        names = [f.name for f in dataclasses.fields(hint)]
        decoders = [_decoder(hints[name]) for name in names]
        values = _values_or_defaults(hint, names)
        if all(d is _identity for d in decoders):
            return lambda row: hint(*values(row))
        return lambda row: hint(*[decode(v) for decode, v in zip(decoders, values(row))])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        decode = _decoder(args[0])
        return list if decode is _identity else (lambda v: [decode(x) for x in v])
    if origin is tuple:
        decode = _decoder(args[0])
        return tuple if decode is _identity else (lambda v: tuple(decode(x) for x in v))
    return _identity


def _values_or_defaults(cls: type, names: list[str]) -> Callable[[dict[str, Any]], tuple]:
    """``row``'s values of ``names``; a field missing from the row takes its declared default.

    Rows written by an earlier schema version lack the fields added since (version 3 DSGs have no
    ``shots``): they read as those fields' defaults. The plain item lookup stays the fast path.
    """
    get = operator.itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def default(name: str) -> Any:
        f = fields[name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        raise KeyError(name)   # a field without a default is required in every version

    def values(row: dict[str, Any]) -> tuple:
        try:
            return get(row)
        except KeyError:
            return tuple(row[name] if name in row else default(name) for name in names)
    return values


def to_row(record: Any) -> dict[str, Any]:
    """A record as a plain dict that ``pa.Table.from_pylist`` accepts."""
    hints = _hints(type(record))
    return {f.name: _to_value(hints[f.name], getattr(record, f.name)) for f in dataclasses.fields(record)}


def from_row(cls: Type[T], row: dict[str, Any]) -> T:
    """The inverse of :func:`to_row` (extra keys in ``row`` are ignored)."""
    return _decoder(cls)(row)


def records_to_table(records: list[Any], cls: type | None = None,
                     extra_columns: dict[str, tuple[pa.Field, list[Any]]] | None = None) -> pa.Table:
    """Records of one class → a table; ``extra_columns`` adds ``name: (field, values)``."""
    cls = cls or type(records[0])
    extra_columns = extra_columns or {}
    schema = record_schema(cls, [field for field, _ in extra_columns.values()])
    rows = [to_row(r) for r in records]
    for name, (_, values) in extra_columns.items():
        for row, value in zip(rows, values):
            row[name] = value
    return pa.Table.from_pylist(rows, schema=schema)


def table_to_records(table: pa.Table, cls: Type[T]) -> list[T]:
    return [from_row(cls, row) for row in table.to_pylist()]


# The two tables a shard holds. ``features`` gives, for each dense array, the
# rows ``[offset, offset + count)`` of this sample in the shard's Zarr array.
FEATURE_REF = pa.struct([pa.field("offset", pa.int64(), nullable=False),
                         pa.field("count", pa.int64(), nullable=False)])


def samples_schema(feature_names: Iterable[str]) -> pa.Schema:
    refs = pa.struct([pa.field(name, FEATURE_REF, nullable=False) for name in feature_names])
    return record_schema(VideoSample, [pa.field("features", refs, nullable=False)])


FAILURES_SCHEMA = record_schema(FailureRecord)

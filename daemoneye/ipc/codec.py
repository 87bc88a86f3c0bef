"""Dataclasses ⇄ JSON values, generically: the wire shape of every record is its dataclass.

`to_wire` turns a frozen dataclass (models.py, protocol.py) into plain JSON values — tuples
become lists, nested dataclasses become objects. `from_wire` goes back, driven by the class's
fields and type hints, and checks every value on the way: a wrong type, a missing field or (in
strict mode) an unknown one raises `CodecError` naming the field by its path (`pid`,
`processes[3].cmdline[0]`). The server decodes request params strictly, so a client is told
exactly which field is wrong; the client decodes the daemon's answers leniently (unknown
fields ignored), so an older client keeps working against a newer daemon that added a field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# (value, path, strict). A path of None means "don't spell out paths": `from_wire` decodes
# without them first (building a path string per field and list item was most of the cost of
# a 10,000-process refresh) and decodes again with them only to word an error.
Decoder = Callable[[Any, str | None, bool], Any]


class CodecError(ValueError):
    """A JSON value does not fit the field it was meant for. `path` names the field."""

    def __init__(self, path: str | None, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path or ""
        self.reason = message


def to_wire(value: Any) -> Any:
    """`value` as JSON-ready values: dataclasses → dicts, tuples → lists."""
    names = _FIELD_NAMES.get(type(value))
    if names is not None:
        return {name: to_wire(getattr(value, name)) for name in names}
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, tuple | list):
        return [to_wire(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
        return to_wire(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(key): to_wire(item) for key, item in value.items()}
    raise TypeError(f"cannot send a {type(value).__name__} over IPC")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def from_wire(cls: type[T], data: Any, *, strict: bool = False, path: str = "") -> T:
    """Decode `data` (parsed JSON) into `cls`; raises CodecError naming the offending field."""
    decoded: T = _decode(_decoder_for(cls), data, path, strict)
    return decoded


def from_wire_many(
    cls: type[T], data: Any, *, strict: bool = False, path: str = ""
) -> tuple[T, ...]:
    """Decode a JSON list of `cls` objects."""
    decoder = _decoder_for(tuple[cls, ...])  # type: ignore[valid-type]
    decoded: tuple[T, ...] = _decode(decoder, data, path, strict)
    return decoded


def _decode(decoder: Decoder, data: Any, path: str, strict: bool) -> Any:
    """Decode without paths; on an error, decode again with them to name the field."""
    try:
        return decoder(data, None, strict)
    except CodecError as unnamed:
        error = unnamed
    try:
        decoder(data, path, strict)
    except CodecError as named:
        raise named from None
    raise error


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _join(path: str | None, name: str) -> str | None:
    if path is None:
        return None
    return f"{path}.{name}" if path else name


_DECODERS: dict[Any, Decoder] = {}


def _decoder_for(annotation: Any) -> Decoder:
    decoder = _DECODERS.get(annotation)
    if decoder is None:
        decoder = _build(annotation)
        _DECODERS[annotation] = decoder
    return decoder


def _build(annotation: Any) -> Decoder:
    if annotation is Any:
        return lambda value, path, strict: value
    if annotation is int:
        return _decode_int
    if annotation is float:
        return _decode_float
    if annotation is str:
        return _scalar(str, "a string")
    if annotation is bool:
        return _scalar(bool, "true or false")
    if annotation is type(None) or annotation is None:
        return _decode_none
    origin = typing.get_origin(annotation)
    if origin is types.UnionType or origin is typing.Union:
        return _union(typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return _homogeneous(args[0])
        return _fixed(args)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _dataclass(annotation)
    raise TypeError(f"no wire decoding for {annotation!r}")


# Integers in request params (strict decoding) are signed 64-bit (what SQLite, pids and signals
# can take) and numbers finite; a larger one would fail deep inside a method (OverflowError)
# instead of naming its field. The client's lenient decoding of answers takes them as they are.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


def _int_in_range(value: int, path: str | None) -> int:
    if INT_MIN <= value <= INT_MAX:
        return value
    raise CodecError(path, "integer out of range (a signed 64-bit integer is expected)")


def _finite(value: float, path: str | None) -> float:
    if math.isfinite(value):
        return value
    raise CodecError(path, f"expected a finite number, got {value!r}")


def _int_as_float(value: int, path: str | None) -> float:
    return float(_int_in_range(value, path))


def _decode_int(value: Any, path: str | None, strict: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_in_range(value, path) if strict else value
    raise CodecError(path, f"expected an integer, got {_describe(value)}")


def _decode_float(value: Any, path: str | None, strict: bool) -> float:
    if isinstance(value, float):
        return _finite(value, path) if strict else value
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_as_float(value, path) if strict else float(value)
    raise CodecError(path, f"expected a number, got {_describe(value)}")


def _checked_scalar(value: Any, path: str | None) -> Any:
    """A scalar taken as it is, once its range is checked (ints 64-bit, floats finite)."""
    kind = type(value)
    if kind is int:
        return _int_in_range(value, path)
    if kind is float:
        return _finite(value, path)
    return value


def _decode_none(value: Any, path: str | None, strict: bool) -> None:
    if value is None:
        return None
    raise CodecError(path, f"expected null, got {_describe(value)}")


def _scalar(kind: type, expected: str) -> Decoder:
    def decode(value: Any, path: str | None, strict: bool) -> Any:
        if isinstance(value, kind):
            return value
        raise CodecError(path, f"expected {expected}, got {_describe(value)}")

    return decode


_KIND_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    type(None): "null",
}


def _union(members: tuple[Any, ...]) -> Decoder:
    # Exact scalar types first: `str | int | float | None` keeps 3 an int and 3.5 a float.
    decoders = [_decoder_for(member) for member in members]
    scalars = {member for member in members if member in _KIND_NAMES}
    others = [d for m, d in zip(members, decoders, strict=True) if m not in _KIND_NAMES]
    expected = " or ".join(_KIND_NAMES.get(m, _kind_name(m)) for m in members)

    def decode(value: Any, path: str | None, strict: bool) -> Any:
        if type(value) in scalars:
            return _checked_scalar(value, path) if strict else value
        if isinstance(value, int) and not isinstance(value, bool) and float in scalars:
            return _int_as_float(value, path) if strict else float(value)
        if len(others) == 1 and value is not None:
            return others[0](value, path, strict)  # its own error says more than ours
        for decoder in others:
            try:
                return decoder(value, path, strict)
            except CodecError:
                continue
        raise CodecError(path, f"expected {expected}, got {_describe(value)}")

    return decode


def _kind_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return "a list"
    return "an object" if dataclasses.is_dataclass(annotation) else str(annotation)


def _homogeneous(item: Any) -> Decoder:
    decode_item = _decoder_for(item)

    def decode(value: Any, path: str | None, strict: bool) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise CodecError(path, f"expected a list, got {_describe(value)}")
        if path is None:
            return tuple([decode_item(entry, None, strict) for entry in value])
        return tuple(decode_item(entry, f"{path}[{i}]", strict) for i, entry in enumerate(value))

    return decode


def _fixed(items: tuple[Any, ...]) -> Decoder:
    decoders = [_decoder_for(item) for item in items]

    def decode(value: Any, path: str | None, strict: bool) -> tuple[Any, ...]:
        if not isinstance(value, list) or len(value) != len(decoders):
            raise CodecError(
                path, f"expected a list of {len(decoders)} values, got {_describe(value)}"
            )
        if path is None:
            return tuple([d(entry, None, strict) for d, entry in zip(decoders, value, strict=True)])
        return tuple(
            d(entry, f"{path}[{i}]", strict)
            for i, (d, entry) in enumerate(zip(decoders, value, strict=True))
        )

    return decode


def _accepted_types(annotation: Any) -> tuple[frozenset[type], bool]:
    """(types taken as they are, whether an int is taken as a float) for an annotation made of
    scalars; (empty, False) for anything that needs its decoder (tuples, dataclasses)."""
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (types.UnionType, typing.Union)
        else (annotation,)
    )
    exact = {type(None) if m is None else m for m in members}
    if not exact <= set(_KIND_NAMES):
        return frozenset(), False
    return frozenset(exact), float in exact and int not in exact


def _dataclass(cls: type) -> Decoder:
    """Decode objects into `cls`: exact scalar types are taken as they are (the common case,
    fast), anything else goes through its field's decoder, which also words the errors."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    known = frozenset(names)
    # Every default as a function: dataclass defaults are immutable values or factories.
    defaults: dict[str, Callable[[], Any]] = {}
    for f in fields:
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = functools.partial(_same, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory
    required = [name for name in names if name not in defaults]
    plan: list[tuple[str, frozenset[type], bool, Decoder, Callable[[], Any] | None]] = []

    def build_plan() -> None:  # on first use: a dataclass may name itself in a field
        hints = typing.get_type_hints(cls)
        for f in fields:
            accept, int_to_float = _accepted_types(hints[f.name])
            plan.append(
                (f.name, accept, int_to_float, _decoder_for(hints[f.name]), defaults.get(f.name))
            )

    def decode(value: Any, path: str | None, strict: bool) -> Any:
        if not plan:
            build_plan()
        if type(value) is not dict:
            raise CodecError(path, f"expected an object, got {_describe(value)}")
        if strict and not known.issuperset(value):
            extra = sorted(set(value) - known)[0]
            match = difflib.get_close_matches(str(extra), names, n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise CodecError(
                _join(path, str(extra)),
                f"unknown field{hint}; expected {', '.join(names) or 'no fields'}",
            )
        args = []
        for name, accept, int_to_float, decoder, default in plan:
            if name in value:
                item = value[name]
                kind = type(item)
                if kind in accept:
                    if strict and (kind is int or kind is float):
                        item = _checked_scalar(item, _join(path, name))
                    args.append(item)
                elif int_to_float and kind is int:
                    args.append(_int_as_float(item, _join(path, name)) if strict else float(item))
                else:
                    args.append(decoder(item, _join(path, name), strict))
            elif default is not None:
                args.append(default())
            else:
                missing = next(n for n in required if n not in value)
                raise CodecError(_join(path, missing), "missing (required)")
        return cls(*args)

    return decode


def _same(value: T) -> T:
    return value

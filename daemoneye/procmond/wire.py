"""The collector pair's payload encoding: a dataclass is a JSON array of its fields, in the
order the dataclass declares them (docs/protocol.md §10, pair version 2).

The pair carries every exec of the host, so its codec is on the hot path of both processes:
objects with names repeat ~40 field names per process record, and decoding them field by field
was a third of the agent's cost per exec. Arrays are half the bytes; they are encoded by the C
JSON encoder with one `attrgetter` call per record, and decoded by checking each position's
type against the field's annotation in one C-level pass (`_Record`). What the positions mean
is still said once, by the dataclass: a field added to ProcessRecord travels with no change
here, and both processes always run the same code (the agent starts its own procmond).

The text of the records the agent keeps (`keep_texts_of`: every live process's record) is
shared as it is decoded (collector/shared_text.py): thousands of them name the same
executables, directories, units and arguments. So are the numbers they repeat
(`keep_values_of`: a tick's timestamps, namespace ids, an idle process's 0.0).

Decoding is strict: an array of the wrong length, a value of the wrong type, a number that is
not a finite float or a signed 64-bit integer, NaN or Infinity anywhere — refused with a
`WireError` whose `path` names the field (`delta.added[0].pid`). The fast pass does not build
paths; when it fails, the value is decoded again slowly, with paths, to name the field. Bulk
payloads go through msgspec before all of this (`loads`): the same checks in C, on a subset of
what the Python passes accept, which judge whatever it refuses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import types
import typing
from collections.abc import Callable, Sequence
from operator import attrgetter, contains, is_not, itemgetter
from typing import Annotated, Any, TypeVar

from daemoneye.collector.shared_text import SHARED
from daemoneye.positional import constructor

T = TypeVar("T")
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_NONE = type(None)
_TEXT = frozenset({str, _NONE})
_SCALARS = frozenset({int, float, str, bool, _NONE})
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class WireError(ValueError):
    """A payload that does not fit its dataclass; `path` names the field ('' for the whole)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class _Refused(Exception):
    """The fast pass's failure: no words, decode again with paths to find them."""


# -- encoding ------------------------------------------------------------------------------

_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    names = tuple(f.name for f in dataclasses.fields(cls))
    if len(names) > 1:
        return attrgetter(*names)  # one C call: the tuple of every field
    if names:
        one = attrgetter(names[0])
        return lambda value: (one(value),)
    return lambda value: ()


def _as_array(value: Any) -> tuple[Any, ...]:
    """json's hook for what it cannot encode itself: a dataclass becomes the tuple of its
    fields (an array), one object at a time as the encoder reaches it."""
    getter = _GETTERS.get(type(value))
    if getter is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"cannot send a {type(value).__name__} over the pair")
        getter = _GETTERS[type(value)] = _getter(type(value))
    return getter(value)


def dumps(payload: Any) -> str:
    """`payload` (a dataclass) as compact ASCII JSON arrays: its length is its size in bytes."""
    return json.dumps(payload, default=_as_array, separators=(",", ":"), allow_nan=False)


# -- decoding ------------------------------------------------------------------------------


class _Constant:
    """What JSON's NaN, Infinity and -Infinity decode to: no field takes it, so it is refused
    with the field's name (`expected a number, got NaN`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def loads(cls: type[T], text: bytes | str) -> T:
    """Decode one payload of `cls`; WireError (with the field's path) when it does not fit,
    ValueError when it is not JSON (json.JSONDecodeError, or NaN/Infinity).

    A bulk payload (EVENTS and SCAN frames: every exec of the host) is decoded by msgspec
    first (`_Checked`): parsing and every type, length and range check in C, then the
    dataclasses built from its tuples. It accepts a subset of what `python_loads` accepts,
    so anything it refuses is decoded again there, which is the authority: it accepts what it
    accepts and names the field of what it does not. Small payloads (procmond's commands,
    health) skip it: procmond never loads msgspec (3.7 MiB of RSS)."""
    if len(text) >= C_PASS_MIN_BYTES:
        checked = _checked_loader(cls)
        if checked is not None:
            try:
                loaded: T = checked.load(text)
            except checked.refusals:
                pass
            else:
                return loaded
    return python_loads(cls, text)


def python_loads(cls: type[T], text: bytes | str) -> T:
    """`loads` without the C pass: the authority on what fits and the words when it does not."""
    data = json.loads(text, parse_constant=_Constant)
    decoder = _decoder(cls)
    try:
        decoded: T = decoder.fast(data)
    except (_Refused, TypeError, ValueError, IndexError):
        decoder.slow(data, "")  # raises WireError naming the field
        raise WireError("", "does not fit its dataclass") from None  # (both passes agree)
    return decoded


# -- the C pass (msgspec) ---------------------------------------------------------------------

C_PASS_MIN_BYTES = 2048  # payloads this long or longer are decoded by msgspec first


def _checked_type(annotation: Any) -> Any:
    """The msgspec type that accepts a subset of what `annotation`'s decoder below accepts:
    a dataclass is the fixed-length array of its fields (TypeError: no such type). Integers
    are signed 64-bit, as below; floats strictly inside ±2**63, so that an integer out of the
    64-bit range in a float field, which msgspec would take as a float, is refused here as
    it is below (a larger finite float is decoded by the pass below)."""
    import msgspec

    if annotation is int:
        return Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
    if annotation is float:
        return Annotated[float, msgspec.Meta(gt=-(2.0**63), lt=2.0**63)]
    if annotation in (str, bool, _NONE, None):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, [_checked_type(a) for a in args])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple[_checked_type(args[0]), ...]  # type: ignore[misc]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation)
        positions = tuple(_checked_type(hints[f.name]) for f in dataclasses.fields(annotation))
        if not positions:
            raise TypeError(f"{annotation.__name__} has no fields")
        return tuple[positions]  # type: ignore[valid-type]
    raise TypeError(f"no checked type for {annotation!r}")


def _builder(annotation: Any) -> Callable[[Any], Any] | None:
    """What turns msgspec's value of `annotation` into ours: None when it already is (a
    scalar, a tuple of non-text scalars)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not _NONE]
        if len(inner) == 1 and len(args) == 2:
            build = _builder(inner[0])
            if build is None:
                return None
            return lambda value: None if value is None else build(value)
        return None  # a union of scalars
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        scalars = _scalar_types(args[0])
        if scalars is not None:
            return SHARED.many if scalars <= _TEXT else None
        item = _builder(args[0])
        assert item is not None, "a tuple of dataclasses has a builder"
        return lambda value: tuple(map(item, value))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _RecordBuilder(annotation).build
    return None


class _RecordBuilder:
    """A dataclass from msgspec's tuple of its fields: nested values built, text fields
    shared for the classes the agent keeps (`keep_texts_of`), then the instance made
    (daemoneye/positional.py: as its `__init__` would, in less than half the time)."""

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        self.cls = cls
        self.make: Callable[[Sequence[Any]], Any] = constructor(cls)
        self.nested = [
            (i, build)
            for i, f in enumerate(fields)
            if (build := _builder(hints[f.name])) is not None
        ]
        texts = [
            i
            for i, f in enumerate(fields)
            if (kinds := _scalar_types(hints[f.name])) is not None and kinds <= _TEXT
        ]
        self.texts = texts if cls in _KEPT else []
        self.texts_at = _getter_of(self.texts)
        self.numbers = _number_plan(cls, _KEPT_VALUES.get(cls, frozenset()))
        count = len(fields)
        self.merge = _getter_of(
            [count + self.texts.index(i) if i in self.texts else i for i in range(count)]
        )

    def build(self, values: tuple[Any, ...]) -> Any:
        args: Sequence[Any] = values
        if self.nested or self.numbers:
            listed = list(values)
            for at, build in self.nested:
                listed[at] = build(listed[at])
            _share_numbers(listed, self.numbers)
            args = listed
        if self.texts:
            texts = self.texts_at(args)
            shared = SHARED.many(texts)
            if shared is not texts:
                return self.make(self.merge((*args, *shared)))
        return self.make(args)


class _Checked:
    """msgspec's JSON decoder for one payload class and the builder of its dataclasses;
    `refusals`: what its `load` raises for a payload the pass below must judge."""

    def __init__(self, cls: type) -> None:
        import msgspec

        self.decoder = msgspec.json.Decoder(_checked_type(cls))
        self.build = _RecordBuilder(cls).build
        self.refusals: tuple[type[Exception], ...] = (
            msgspec.ValidationError,
            msgspec.DecodeError,
            TypeError,
            ValueError,
        )

    def load(self, text: bytes | str) -> Any:
        return self.build(self.decoder.decode(text))


_CHECKED: dict[type, _Checked | None] = {}


def _checked_loader(cls: type) -> _Checked | None:
    """The C pass for `cls`, None when its fields have no msgspec type (then only the pass
    below decodes it)."""
    if cls not in _CHECKED:
        try:
            _CHECKED[cls] = _Checked(cls)
        except TypeError:
            _CHECKED[cls] = None
    return _CHECKED[cls]


_KEPT: set[type] = set()
_KEPT_VALUES: dict[type, frozenset[str]] = {}
# one object per distinct number of the kept fields, per type (1 == 1.0, and an int field
# must never get a float back); bounded like the shared texts: cleared when full
_SHARED_NUMBERS: dict[type, dict[Any, Any]] = {int: {}, float: {}}
_SHARED_NUMBERS_MAX = 8192
_NumberPlan = list[tuple[int, type, dict[Any, Any]]]


def keep_texts_of(*classes: type) -> None:
    """Share the text fields of `classes` as they are decoded (records that live long)."""
    _KEPT.update(classes)
    _DECODERS.clear()  # decoders built before this were planned without it
    _CHECKED.clear()


def keep_values_of(cls: type, *names: str) -> None:
    """Share the int or float fields `names` of `cls` as they are decoded: values that
    thousands of long-lived records repeat. A name that is no such field is a ValueError."""
    _number_plan(cls, frozenset(names))  # checks the names
    _KEPT_VALUES[cls] = frozenset(names)
    _DECODERS.clear()
    _CHECKED.clear()


def _number_plan(cls: type, names: frozenset[str]) -> _NumberPlan:
    """(position, type, shared values) of each kept number field of `cls`."""
    hints = typing.get_type_hints(cls)
    plan: _NumberPlan = []
    for at, field in enumerate(dataclasses.fields(cls)):
        if field.name not in names:
            continue
        kinds = _scalar_types(hints[field.name]) or frozenset()
        number = next((kind for kind in (int, float) if kind in kinds), None)
        if number is None or kinds - {number, _NONE}:
            raise ValueError(f"{cls.__name__}.{field.name} is not an int or float field")
        plan.append((at, number, _SHARED_NUMBERS[number]))
    missing = names - {field.name for field in dataclasses.fields(cls)}
    if missing:
        raise ValueError(f"{cls.__name__} has no field {', '.join(sorted(missing))}")
    return plan


def _share_numbers(args: list[Any], plan: _NumberPlan) -> None:
    for at, number, shared in plan:
        value = args[at]
        if type(value) is not number:
            continue
        if not value and number is float and math.copysign(1.0, args[at]) < 0:
            continue  # -0.0 == 0.0: shared, either would come back as the other
        if len(shared) >= _SHARED_NUMBERS_MAX:
            shared.clear()
        args[at] = shared.setdefault(value, value)


class _Decoder:
    """One annotation's decoder: `fast(value)` (no paths, raises anything) and `slow(value,
    path)` (raises WireError with the path), which accept exactly the same values."""

    fast: Callable[[Any], Any]

    def slow(self, value: Any, path: str) -> Any:
        raise NotImplementedError


_DECODERS: dict[Any, _Decoder] = {}


def _decoder(annotation: Any) -> _Decoder:
    found = _DECODERS.get(annotation)
    if found is None:
        found = _build(annotation)
        _DECODERS[annotation] = found
    return found


def _build(annotation: Any) -> _Decoder:
    exact = _scalar_types(annotation)
    if exact is not None:
        return _Scalar(exact)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not _NONE]
        if len(inner) == 1 and len(args) == 2:
            return _Optional(_decoder(inner[0]))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _Tuple(_decoder(args[0]))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _Record(annotation)
    raise TypeError(f"no pair encoding for {annotation!r}")


def _scalar_types(annotation: Any) -> frozenset[type] | None:
    """The JSON types a scalar annotation names, None when it is not a scalar."""
    origin = typing.get_origin(annotation)
    members = typing.get_args(annotation) if origin in (types.UnionType, typing.Union) else ()
    found = frozenset({_NONE if m is None else m for m in members or (annotation,)})
    return found if found <= _SCALARS else None


def _expected(accepted: frozenset[type]) -> str:
    names = [_KIND_NAMES[t] for t in (int, float, str, bool) if t in accepted]
    if float in accepted:
        names.remove("an integer")
    if _NONE in accepted:
        names.append("null")
    return " or ".join(names)


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


def _checked(value: Any, int_is_float: bool) -> Any:
    """A number in range for its field: ints signed 64-bit, floats finite; an int in a float
    field becomes a float. Anything else is returned as it is."""
    kind = type(value)
    if kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _Refused
        return float(value) if int_is_float else value
    if kind is float and not math.isfinite(value):
        raise _Refused
    return value


def _range_reason(value: Any) -> str:
    if type(value) is int:
        return "integer out of range (a signed 64-bit integer is expected)"
    return f"expected a finite number, got {value!r}"


class _Scalar(_Decoder):
    """A scalar field. `exact`: the types its annotation names; `accepted` adds int to a float
    field (JSON 3 for 3.0, which the pair's own encoder never writes, is taken as 3.0)."""

    def __init__(self, exact: frozenset[type]) -> None:
        self.exact = exact
        self.int_is_float = float in exact and int not in exact
        self.accepted = exact | {int} if self.int_is_float else exact
        self.numeric = bool(exact & {int, float})
        self.fast = self._fast

    def _fast(self, value: Any) -> Any:
        if type(value) not in self.accepted:
            raise _Refused
        return _checked(value, self.int_is_float) if self.numeric else value

    def slow(self, value: Any, path: str) -> Any:
        if type(value) not in self.accepted:
            raise WireError(path, f"expected {_expected(self.accepted)}, got {_describe(value)}")
        try:
            return _checked(value, self.int_is_float) if self.numeric else value
        except _Refused:
            raise WireError(path, _range_reason(value)) from None


class _Optional(_Decoder):
    def __init__(self, inner: _Decoder) -> None:
        self.inner = inner
        inner_fast = inner.fast
        self.fast = lambda value: None if value is None else inner_fast(value)

    def slow(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.slow(value, path)


class _Tuple(_Decoder):
    def __init__(self, item: _Decoder) -> None:
        self.item = item
        if isinstance(item, _Scalar) and not item.numeric:
            accepted = item.accepted  # tuple[str, ...]: one C-level pass over the types
            self.fast = lambda value: self._plain(value, accepted)
        else:
            item_fast = item.fast
            self.fast = lambda value: self._items(value, item_fast)

    @staticmethod
    def _plain(value: Any, accepted: frozenset[type]) -> tuple[Any, ...]:
        if type(value) is not list or not all(map(accepted.__contains__, map(type, value))):
            raise _Refused
        return SHARED.many(tuple(value)) if accepted <= _TEXT else tuple(value)

    @staticmethod
    def _items(value: Any, item_fast: Callable[[Any], Any]) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _Refused
        return tuple([item_fast(entry) for entry in value])

    def slow(self, value: Any, path: str) -> Any:
        if type(value) is not list:
            raise WireError(path, f"expected a list, got {_describe(value)}")
        return tuple(self.item.slow(entry, f"{path}[{i}]") for i, entry in enumerate(value))


_not_none = functools.partial(is_not, None)  # `is not None`, as a C call for filter()


def _getter_of(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at `positions` of a list, as a tuple, in one C call where it can be."""
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        at = positions[0]
        return lambda values: (values[at],)
    return lambda values: ()


class _Record(_Decoder):
    """A dataclass from the array of its fields. The fast pass checks the type of every
    scalar position in one C-level pass (`map(contains, …)`) and the range of every number
    in one more (min and max), then decodes the nested values and makes the instance
    (daemoneye/positional.py). A value that needs more (an int in a float field) takes the field-by-
    field pass; a wrong one fails there."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.names: list[str] = []
        self.fields: list[_Decoder] = []
        self._ready = False
        self._make: Callable[[Sequence[Any]], Any] = constructor(cls)
        self.fast = self._fast

    def _prepare(self) -> None:  # on first use: a dataclass may name itself in a field
        hints = typing.get_type_hints(self.cls)
        fields = dataclasses.fields(self.cls)
        self.names = [f.name for f in fields]
        self.fields = [_decoder(hints[f.name]) for f in fields]
        self._count = len(fields)
        scalars = [(i, d) for i, d in enumerate(self.fields) if isinstance(d, _Scalar)]
        self._scalar_at = _getter_of([i for i, _ in scalars])
        self._exact = [d.exact for _, d in scalars]
        self._numbers_at = _getter_of([i for i, d in scalars if d.numeric])
        self._each = [(i, d.fast) for i, d in scalars]
        self._nested = [
            (i, d.fast) for i, d in enumerate(self.fields) if not isinstance(d, _Scalar)
        ]
        texts = [i for i, d in scalars if d.exact <= _TEXT] if self.cls in _KEPT else []
        self._texts = texts
        self._numbers = _number_plan(self.cls, _KEPT_VALUES.get(self.cls, frozenset()))
        self._texts_at = _getter_of(texts)
        # over (*fields, *shared texts): each field, or its shared text
        self._merge = _getter_of(
            [self._count + texts.index(i) if i in texts else i for i in range(self._count)]
        )
        self._ready = True

    def _fast(self, value: Any) -> Any:
        if not self._ready:
            self._prepare()
        if type(value) is not list or len(value) != self._count:
            raise _Refused
        args = value.copy()  # the JSON stays as it came, for the slow pass to word a failure
        if not self._plainly_fits(value):  # needs more than that, or is wrong: field by field
            for at, scalar in self._each:
                args[at] = scalar(args[at])
        for at, nested in self._nested:
            args[at] = nested(args[at])
        _share_numbers(args, self._numbers)
        if self._texts:
            # one object per distinct text across records: the agent keeps every live one
            texts = self._texts_at(args)
            shared = SHARED.many(texts)
            if shared is not texts:  # the fields, the shared texts in their places (in C)
                return self._make(self._merge((*args, *shared)))
        return self._make(args)

    def _plainly_fits(self, value: list[Any]) -> bool:
        """Every scalar has a type its field names, and every number is within ±2**63 (so an
        int is signed 64-bit and a float finite): two C-level passes, the common case."""
        if not all(map(contains, self._exact, map(type, self._scalar_at(value)))):
            return False
        numbers = list(filter(_not_none, self._numbers_at(value)))
        return not numbers or (min(numbers) >= INT_MIN and max(numbers) <= INT_MAX)

    def slow(self, value: Any, path: str) -> Any:
        if not self._ready:
            self._prepare()
        if type(value) is not list:
            raise WireError(
                path, f"expected a list of {self._count} fields, got {_describe(value)}"
            )
        if len(value) != self._count:
            raise WireError(
                path,
                f"{len(value)} values for {self.cls.__name__}'s {self._count} fields "
                f"({', '.join(self.names)})",
            )
        args = [
            decoder.slow(item, f"{path}.{name}" if path else name)
            for name, decoder, item in zip(self.names, self.fields, value, strict=True)
        ]
        try:
            return self.cls(*args)
        except (TypeError, ValueError) as exc:
            raise WireError(path, str(exc)) from None

"""Instances of frozen, slotted dataclasses from all their field values in order, as the pair's
decoders make them by the thousand (procmond/wire.py).

A frozen dataclass's `__init__` sets each field through `object.__setattr__`, a lookup and a
call per field: for a ProcessRecord's 38 fields that is most of what decoding one costs. For a
slotted class the same object is made by setting each slot through its descriptor, unrolled
into one function per class: less than half the time, the same object (equal, hashed alike,
still frozen). A class this cannot make exactly (no slots, its own `__init__` or `__new__`, a
`__post_init__`, an `InitVar`) is called as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def constructor(cls: type[T]) -> Callable[[Sequence[Any]], T]:
    """A function that makes `cls` from a sequence of all its fields' values, in the order
    the dataclass declares them (no defaults: every value is given)."""
    fields = dataclasses.fields(cls)
    params = getattr(cls, dataclasses._FIELDS, {})  # type: ignore[attr-defined]
    exact = (
        "__slots__" in cls.__dict__
        and cls.__dataclass_params__.init  # type: ignore[attr-defined]  # __init__ is generated
        and cls.__new__ is object.__new__
        and not hasattr(cls, "__post_init__")
        and len(params) == len(fields)  # no InitVar or ClassVar pseudo-fields
        and all(f.init for f in fields)
    )
    if not exact:
        return lambda values: cls(*values)
    names: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_count": len(fields)}
    lines = [
        "def make(values):",
        "    if len(values) != _count:",
        "        raise TypeError(f'{_cls.__name__} takes {_count} values, not {len(values)}')",
        "    made = _new(_cls)",
    ]
    for index, field in enumerate(fields):
        names[f"_set{index}"] = getattr(cls, field.name).__set__
        lines.append(f"    _set{index}(made, values[{index}])")
    lines.append("    return made")
    exec("\n".join(lines), names)  # our own text: slot names and indexes only
    make: Callable[[Sequence[Any]], T] = names["make"]
    return make

"""Instances made from their field values in order (daemoneye/positional.py) are the objects
the classes' own `__init__` makes: equal, hashed alike, frozen; a class with more to do at
init than setting fields is called as usual."""

from __future__ import annotations

import dataclasses

import pytest

from daemoneye.models import ProcessEvent, ProcessKey, ProcessRecord
from daemoneye.positional import constructor
from tests.unit.conftest import DeltaFactory, RecordFactory


def values_of(instance: object) -> list[object]:
    return [getattr(instance, f.name) for f in dataclasses.fields(instance)]  # type: ignore[arg-type]


def test_records_events_and_deltas_are_the_objects_init_makes(
    make_record: RecordFactory, make_delta: DeltaFactory
) -> None:
    record = make_record(42, 7.5, cmdline=("sh", "-c", "x"), cwd=None)
    event = ProcessEvent(8.0, "exec", 42, 7.5, exe="/bin/sh", cmdline=("sh",))
    delta = make_delta(9.0, added=[record], ended=[ProcessKey(41, 1.0)], events=[event])
    for original in (record, event, ProcessKey(3, 4.0), delta):
        made = constructor(type(original))(values_of(original))
        assert type(made) is type(original)
        assert made == original and hash(made) == hash(original)
        assert repr(made) == repr(original)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, dataclasses.fields(made)[0].name, None)


def test_a_class_with_more_to_do_at_init_is_called() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    assert constructor(Checked)([3]) == Checked(3)
    with pytest.raises(ValueError, match="negative"):
        constructor(Checked)([-1])


def test_a_class_without_slots_is_called() -> None:
    @dataclasses.dataclass(frozen=True)
    class Plain:
        a: int
        b: str = "x"

    made = constructor(Plain)([1, "y"])
    assert made == Plain(1, "y") and made.__dict__ == {"a": 1, "b": "y"}


def test_a_record_is_made_without_its_init_and_checks_its_count(
    make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point of the module: the generated __init__ and its per-field setattr are not run.
    record = make_record(5, 1.0)
    make = constructor(ProcessRecord)

    def refuse(*args: object) -> None:
        raise AssertionError("__init__ ran")

    monkeypatch.setattr(ProcessRecord, "__init__", refuse)
    assert make(values_of(record)) == record
    with pytest.raises(TypeError, match="ProcessRecord takes"):
        make([*values_of(record), "one too many"])


def test_a_class_with_its_own_init_or_new_is_called() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, init=False)
    class OwnInit:
        a: int

        def __init__(self, a: int) -> None:
            object.__setattr__(self, "a", abs(a))

    @dataclasses.dataclass(frozen=True, slots=True)
    class OwnNew:
        a: int

        def __new__(cls, a: int) -> OwnNew:
            if a < 0:
                raise ValueError("negative")
            return object.__new__(cls)

    assert constructor(OwnInit)([-1]).a == 1
    with pytest.raises(ValueError, match="negative"):
        constructor(OwnNew)([-1])

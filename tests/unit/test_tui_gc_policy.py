"""When the dashboard lets the garbage collector run: frozen after every process set, a full
collection only when due and the user is not in the middle of typing."""

from __future__ import annotations

from daemoneye.tui.gc_policy import THRESHOLDS, CollectionPolicy, Collector


class FakeGc:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threshold = (700, 10, 10)

    def collector(self) -> Collector:
        return Collector(
            freeze=lambda: self.calls.append("freeze"),
            unfreeze=lambda: self.calls.append("unfreeze"),
            collect=self._collect,
            get_threshold=lambda: self.threshold,
            set_threshold=self._set_threshold,
        )

    def _collect(self) -> int:
        self.calls.append("collect")
        return 0

    def _set_threshold(self, *values: int) -> None:
        self.threshold = (values[0], values[1], values[2])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[CollectionPolicy, FakeGc, Clock]:
    fake, clock = FakeGc(), Clock()
    policy = CollectionPolicy(collector=fake.collector(), clock=clock, full_every_s=60, idle_s=1)
    policy.start()
    return policy, fake, clock


def test_every_applied_set_is_frozen_and_nothing_is_collected_before_due() -> None:
    policy, fake, clock = make()
    for _ in range(5):
        clock.now += 10
        policy.set_applied()
    assert fake.calls == ["freeze"] * 5


def test_a_due_full_collection_waits_for_a_pause_in_input() -> None:
    policy, fake, clock = make()
    clock.now += 61
    policy.input_seen()
    policy.set_applied()
    assert "collect" not in fake.calls, "the user just pressed a key"
    clock.now += 2
    policy.set_applied()
    assert fake.calls[-3:] == ["unfreeze", "collect", "freeze"]
    assert policy.full_collections == 1


def test_a_user_who_never_pauses_still_gets_a_collection_at_twice_the_period() -> None:
    policy, fake, clock = make()
    for _ in range(13):
        clock.now += 10
        policy.input_seen()
        policy.set_applied()
    assert policy.full_collections == 1 and "collect" in fake.calls


def test_stopping_unfreezes_and_gives_back_the_thresholds() -> None:
    policy, fake, _ = make()
    assert fake.threshold == THRESHOLDS
    policy.stop()
    assert fake.threshold == (700, 10, 10) and fake.calls[-1] == "unfreeze"

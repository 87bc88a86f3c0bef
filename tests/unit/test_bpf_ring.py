"""bpf.RingBuffer against a ring laid out in a memfd as the kernel lays out a
BPF_MAP_TYPE_RINGBUF (the consumer's page, the producer's page, then the data once): records
that run past the end of the data come out whole."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator

import pytest

from daemoneye.collector.bpf import RingBuffer

PAGE = mmap.PAGESIZE
SIZE = PAGE  # the smallest ring: one page of data
_BUSY, _DISCARD = 1 << 31, 1 << 30


class _Ring:
    """A ring's memory; `put` writes records as the kernel commits them."""

    def __init__(self, start: int) -> None:
        self.fd = os.memfd_create("de-test-ring")
        os.ftruncate(self.fd, 2 * PAGE + SIZE)
        self.producer = start
        self._set(0, start)  # the consumer begins where the producer does
        self._set(PAGE, start)

    def _set(self, offset: int, value: int) -> None:
        os.pwrite(self.fd, struct.pack("<Q", value), offset)

    def _write(self, position: int, data: bytes) -> None:
        for index, byte in enumerate(data):  # a byte at a time: each wraps on its own
            os.pwrite(self.fd, bytes([byte]), 2 * PAGE + (position + index) % SIZE)

    def put(self, payload: bytes, flags: int = 0) -> None:
        self._write(self.producer, struct.pack("<II", len(payload) | flags, 0))
        self._write(self.producer + 8, payload)
        self.producer += (len(payload) + 8 + 7) & ~7
        self._set(PAGE, self.producer)

    def consumer(self) -> int:
        return int(struct.unpack("<Q", os.pread(self.fd, 8, 0))[0])


@pytest.fixture
def ring_at() -> Iterator[list[_Ring]]:
    made: list[_Ring] = []
    yield made
    for ring in made:
        os.close(ring.fd)


@pytest.mark.parametrize(
    "start",
    [0, SIZE - 16, SIZE - 8, 3 * SIZE - 24],
    ids=["from the start", "header before the end", "header at the very end", "laps later"],
)
def test_records_that_run_past_the_end_come_out_whole(ring_at: list[_Ring], start: int) -> None:
    ring = _Ring(start)
    ring_at.append(ring)
    payloads = [bytes(range(40)), b"x" * 10, b"y" * 300]
    for payload in payloads:
        ring.put(payload)
    reader = RingBuffer(ring.fd, SIZE)
    try:
        assert list(reader.records(10)) == payloads
        assert ring.consumer() == ring.producer  # all released
    finally:
        reader.close()


def test_a_discarded_record_across_the_end_is_skipped_and_a_busy_one_stops_the_read(
    ring_at: list[_Ring],
) -> None:
    ring = _Ring(SIZE - 16)
    ring_at.append(ring)
    ring.put(b"d" * 24, _DISCARD)
    ring.put(b"kept")
    released = ring.producer
    ring.put(b"b" * 8, _BUSY)
    reader = RingBuffer(ring.fd, SIZE)
    try:
        assert list(reader.records(10)) == [b"kept"]
        assert ring.consumer() == released  # up to the busy one
    finally:
        reader.close()

"""Shared-memory slots: the latest frame of one node, written by one process and read by the other.

A slot is an anonymous shared file (``os.memfd_create``) mapped by both
processes; its descriptor crosses once, beside a ``wire.SlotOpened`` message.
Anonymous memory rather than ``multiprocessing.shared_memory``: it has no
name, so nothing is left in ``/dev/shm`` when either process is killed (the
memory goes with the last descriptor and mapping), and no resource-tracker
process is needed on either side.

Each slot has two buffers, used in turn, so that the writer never overwrites
the frame it announced last while the reader may still be copying it. Every
buffer starts with a sequence number, odd while the writer is inside it
(a seqlock): the writer announces ``(buffer, seq)`` over the socket after
writing, and the reader checks that the buffer still holds that ``seq`` after
copying. A reader that fell two frames behind finds a newer ``seq`` and drops
the frame (counted by the caller): the slot is latest-wins, as the in-process
handoff is, and it is bounded by construction (two frames per node).
"""

from __future__ import annotations

import mmap
import os
import struct

_HEADER = struct.Struct("<Q")  # the buffer's sequence number
BUFFERS = 2


def _buffer_stride(capacity: int) -> int:
    # Each buffer starts on a 64-byte boundary (its own cache line for the sequence number).
    return (_HEADER.size + capacity + 63) // 64 * 64


def slot_size(capacity: int) -> int:
    """Bytes of shared memory for a slot whose buffers hold ``capacity`` bytes each."""
    return BUFFERS * _buffer_stride(capacity)


def capacity_of(size: int) -> int:
    return size // BUFFERS - _HEADER.size


class FrameSlot:
    """One mapping of a slot. The writing side :meth:`create`s it and sends :meth:`fileno`; the reading
    side :meth:`attach`es the descriptor it received (and owns it from then on)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size
        self.capacity = capacity_of(size)
        self._stride = size // BUFFERS
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._writes = 0  # writer side: frames written so far

    @classmethod
    def create(cls, capacity: int, name: str = "compositord-frame") -> FrameSlot:
        size = slot_size(capacity)
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int, size: int) -> FrameSlot:
        try:
            if os.fstat(fd).st_size < size:
                raise ValueError(f"a slot of {size} bytes came with a descriptor of {os.fstat(fd).st_size}")
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        return self._fd

    @property
    def next_buffer(self) -> int:
        """The buffer the next :meth:`write` goes into."""
        return self._writes % BUFFERS

    def write(self, data: bytes | bytearray | memoryview, tail: bytes | bytearray | memoryview = b"") -> tuple[int, int]:
        """Copy ``data`` then ``tail`` (e.g. a frame's sound after its pixels, without joining them first) into
        the next buffer; ``(buffer, seq)`` to announce to the reader, who reads ``len(data) + len(tail)`` bytes."""
        length = len(data) + len(tail)
        if length > self.capacity:
            raise ValueError(f"{length} bytes do not fit a slot of {self.capacity}")
        buffer = self.next_buffer
        base = buffer * self._stride
        (previous,) = _HEADER.unpack_from(self._map, base)
        seq = previous + 2
        _HEADER.pack_into(self._map, base, seq - 1)  # odd: being written
        start = base + _HEADER.size
        self._map[start : start + len(data)] = data
        if len(tail):
            self._map[start + len(data) : start + length] = tail
        _HEADER.pack_into(self._map, base, seq)
        self._writes += 1
        return buffer, seq

    def read(self, buffer: int, seq: int, length: int) -> bytes | None:
        """A copy of what :meth:`write` announced as ``(buffer, seq)``; None when it was overwritten since."""
        if not 0 <= buffer < BUFFERS or not 0 <= length <= self.capacity:
            return None
        base = buffer * self._stride
        if _HEADER.unpack_from(self._map, base)[0] != seq:
            return None
        data = self._map[base + _HEADER.size : base + _HEADER.size + length]
        if _HEADER.unpack_from(self._map, base)[0] != seq:
            return None  # the writer came round again while we copied: a torn frame is dropped
        return data

    def close(self) -> None:
        if self._fd < 0:
            return
        self._map.close()
        os.close(self._fd)
        self._fd = -1

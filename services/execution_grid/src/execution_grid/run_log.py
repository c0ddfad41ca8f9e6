"""A run's output on disk, capped: the head (how it started) and a rolling tail (how it ended) are kept.

An agent that prints gigabytes must not fill the worker's disk, and the part worth reading is the start
and the end, so the middle is what gets dropped. Writes are synchronous: small appends to the page cache
cost less than a thread hop per chunk.
"""

import os
from pathlib import Path
from typing import BinaryIO

HEAD = "output.head.log"
TAIL = "output.tail.log"
TAIL_PREVIOUS = "output.tail.1.log"
DROPPED = "output.dropped"


class RunLog:
    """Appends output under ``directory``: up to half the budget in the head, then two rotating tail files."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self._directory = directory
        self._head_budget = max_bytes // 2
        self._tail_budget = max(1, (max_bytes - self._head_budget) // 2)
        self._head_written = 0
        self._tail_written = 0
        self._head: BinaryIO | None = (directory / HEAD).open("ab")
        self._tail: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        """Append a chunk of output."""
        if self._head is not None:
            room = self._head_budget - self._head_written
            self._head.write(chunk[:room])
            self._head_written += min(room, len(chunk))
            chunk = chunk[room:]
            if self._head_written >= self._head_budget:
                self._head.close()
                self._head = None
            else:
                self._head.flush()
        while chunk:
            if self._tail is None or self._tail_written >= self._tail_budget:
                self._rotate()
            assert self._tail is not None
            room = self._tail_budget - self._tail_written
            self._tail.write(chunk[:room])
            self._tail_written += min(room, len(chunk))
            chunk = chunk[room:]
        if self._tail is not None:
            self._tail.flush()

    def _rotate(self) -> None:
        if self._tail is not None:
            self._tail.close()
            if (self._directory / TAIL_PREVIOUS).exists():
                (self._directory / DROPPED).touch()  # the previous tail is overwritten: output is lost
            os.replace(self._directory / TAIL, self._directory / TAIL_PREVIOUS)
        self._tail = (self._directory / TAIL).open("wb")
        self._tail_written = 0

    def close(self) -> None:
        """Flush and close; idempotent."""
        for handle in (self._head, self._tail):
            if handle is not None:
                handle.close()
        self._head = self._tail = None


def read_run_log(directory: Path, *, tail_bytes: int | None = None) -> bytes:
    """The kept output, with a marker where the middle was dropped; only the last ``tail_bytes`` if given."""
    parts = [_read(directory / HEAD)]
    previous, tail = _read(directory / TAIL_PREVIOUS), _read(directory / TAIL)
    if previous or tail:
        if (directory / DROPPED).exists():
            parts.append(b"\n[... output dropped here: the run log is capped ...]\n")
        parts += [previous, tail]
    whole = b"".join(parts)
    return whole[-tail_bytes:] if tail_bytes else whole


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""

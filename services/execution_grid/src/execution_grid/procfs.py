"""Finding processes through /proc: what a restarted worker needs to clean up after its predecessor."""

import os
import signal
from pathlib import Path


def kill_group_members(pgid: int, *, started_since: int | None) -> int:
    """SIGKILL every process of group ``pgid`` that started at or after ``started_since`` (clock ticks).

    The group's leader may be gone while its children live on (the parent-death signal reaches the leader
    only). Checking the start time keeps a recycled group id, if ever, from costing an unrelated process.
    Returns how many were killed.
    """
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        group, start = stat
        if group != pgid or (started_since is not None and start < started_since):
            continue
        try:
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def _stat(entry: Path) -> tuple[int, int] | None:
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state, ppid, pgrp (field 5) … starttime (field 22).
    return int(fields[2]), int(fields[19])

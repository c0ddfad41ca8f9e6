import asyncio
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _add_owner_permissions(path: str) -> None:
    os.chmod(path, os.lstat(path).st_mode | stat.S_IRWXU)


def _make_writable_and_retry(function: Callable[..., Any], path: str, error: BaseException) -> None:
    # Agents leave read-only trees behind (Go's module cache, some package managers): removing an entry needs its
    # directory to be writable, so grant the owner's permissions and retry; anything else is a real failure.
    del function
    if isinstance(error, FileNotFoundError):
        return
    if not isinstance(error, PermissionError):
        raise error
    _add_owner_permissions(os.path.dirname(path))
    if os.path.isdir(path) and not os.path.islink(path):
        _add_owner_permissions(path)
        # rmtree skips a directory it could not open, so remove that subtree here.
        shutil.rmtree(path, onexc=_make_writable_and_retry)
    else:
        os.unlink(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onexc=_make_writable_and_retry)


async def remove_path(path: Path) -> None:
    """Remove a file or directory tree (a missing one is fine) off the event loop."""
    await asyncio.to_thread(_remove, path)

"""Bare-repository caches: one per clone URL, shared by every worktree made from it.

Layout of a cache (``git init --bare`` plus explicit refspecs, not ``git clone --mirror``):

- ``refs/remotes/origin/*`` and ``refs/tags/*`` track the remote, updated by ``git fetch --prune``;
- ``refs/heads/*`` are the agents' local branches, one per live worktree, which no fetch ever touches.

A mirror (``+refs/*:refs/*`` with ``remote.origin.mirror``) would put both in ``refs/heads/*``: its ``fetch
--prune`` deletes a running agent's branch from under its worktree, ``git push origin <branch>`` from a worktree
fails with "--mirror can't be combined with refspecs", and on GitHub it also drags in every ``refs/pull/*``.
"""

import asyncio
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from execution_grid.workspaces.files import remove_path
from execution_grid.workspaces.git import Auth, GitFailure, GitRunner

_FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
_TMP_PREFIX = ".tmp-"
_HEX_COMMIT = re.compile(r"[0-9a-fA-F]{7,64}")


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Start:
    commit: str
    resumed: bool


@dataclass(slots=True, eq=False)
class Cache:
    """One bare cache and the in-process locks that serialise git's writes to it.

    The locks only order this process's git commands: one manager per cache directory per host.
    """

    path: Path
    fetch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Worktree admin files, local branches and config are written under this one; a fetch only writes
    # refs/remotes and refs/tags (auto-gc is off, see create), so the two can run side by side.
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_fetch_started: float | None = None
    creating: Path | None = None


def cache_name(clone_url: str) -> str:
    """``<owner>-<repo>-<hash of the URL>.git``: readable in ``ls``, unique per URL."""
    trimmed = clone_url.rstrip("/").removesuffix(".git")
    parts = [part for part in re.split(r"[/:]", trimmed) if part]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts[-2:])).strip("._-")[:60] or "repo"
    digest = hashlib.sha256(clone_url.encode()).hexdigest()[:12]
    return f"{readable}-{digest}.git"


def is_temporary(path: Path) -> bool:
    return path.name.startswith(_TMP_PREFIX)


async def ensure_fresh(
    runner: GitRunner,
    cache: Cache,
    *,
    clone_url: str,
    auth: Auth | None,
    requested_at: float,
    min_refetch_interval_s: float,
    identity: Identity,
) -> None:
    """Create the cache on first use, else fetch it.

    Skips the fetch when one that started after ``requested_at`` (or within ``min_refetch_interval_s``) already
    brought what this caller would see.
    """
    async with cache.fetch_lock:
        started = time.monotonic()
        if not cache.path.is_dir():
            await _create(runner, cache, clone_url=clone_url, auth=auth, identity=identity)
        else:
            last = cache.last_fetch_started
            # Concurrent prepares queue on the lock; the first one's fetch serves all that asked before it began.
            if last is not None and (last >= requested_at or started - last < min_refetch_interval_s):
                return
            await runner.run(
                "fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin", cwd=cache.path, auth=auth
            )
        cache.last_fetch_started = started


async def _create(runner: GitRunner, cache: Cache, *, clone_url: str, auth: Auth | None, identity: Identity) -> None:
    # Built beside its final place and renamed in one step: a crash mid-clone leaves only a .tmp- directory,
    # which no later run trusts and prune() removes.
    tmp = cache.path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{cache.path.name}")
    cache.creating = tmp
    try:
        await runner.run("-c", "init.defaultBranch=main", "init", "--quiet", "--bare", str(tmp), cwd=cache.path.parent)
        settings = [
            ("remote.origin.url", clone_url),
            *(("remote.origin.fetch", refspec) for refspec in _FETCH_REFSPECS),
            # Auto-gc would run detached after a fetch and pack refs under a worktree being added; prune() runs it.
            ("gc.auto", "0"),
            ("maintenance.auto", "false"),
            # A plain `git push` in a worktree pushes the agent's branch to the same name on origin.
            ("push.default", "current"),
        ]
        for key in ("user.name", "user.email"):
            present = await runner.run("config", "--get", key, cwd=tmp, check=False)
            if present.returncode != 0:
                settings.append((key, identity.name if key == "user.name" else identity.email))
        for key, value in settings:
            await runner.run("config", "--add", key, value, cwd=tmp)
        await runner.run("fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin", cwd=tmp, auth=auth)
        await _set_default_branch(runner, tmp, auth)
        try:
            os.rename(tmp, cache.path)
        except OSError:
            # Another process on this host won the race; its complete cache is as good as ours.
            if not cache.path.is_dir():
                raise
            await remove_path(tmp)
    except BaseException:
        await remove_path(tmp)
        raise
    finally:
        cache.creating = None


async def _set_default_branch(runner: GitRunner, repo: Path, auth: Auth | None) -> bool:
    # Git 2.39's fetch never sets refs/remotes/origin/HEAD; ask the remote. An empty remote has none.
    result = await runner.run("remote", "set-head", "origin", "--auto", cwd=repo, auth=auth, check=False)
    return result.returncode == 0


async def resolve_start(runner: GitRunner, cache: Cache, *, ref: str | None, branch: str, auth: Auth | None) -> Start:
    """The commit a new worktree starts at: the pushed ``branch`` when the remote has it, else ``ref``."""
    pushed = await _commit(runner, cache.path, f"refs/remotes/origin/{branch}")
    if pushed is not None:
        return Start(pushed, resumed=True)
    if ref is None:
        return Start(await _default_commit(runner, cache, auth), resumed=False)
    for candidate in _candidates(ref):
        commit = await _commit(runner, cache.path, candidate)
        if commit is not None:
            return Start(commit, resumed=False)
    return Start(await _fetch_one(runner, cache, ref, auth), resumed=False)


def _candidates(ref: str) -> list[str]:
    if ref.startswith("refs/heads/"):
        return ["refs/remotes/origin/" + ref.removeprefix("refs/heads/")]
    if ref.startswith("refs/"):
        return [ref]
    candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if _HEX_COMMIT.fullmatch(ref):
        candidates.append(ref)
    return candidates


async def _commit(runner: GitRunner, repo: Path, name: str) -> str | None:
    result = await runner.run("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=repo, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


async def _default_commit(runner: GitRunner, cache: Cache, auth: Auth | None) -> str:
    commit = await _commit(runner, cache.path, "refs/remotes/origin/HEAD")
    if commit is None:
        # The default branch was renamed or deleted upstream since the cache was made: ask again.
        async with cache.fetch_lock:
            if await _set_default_branch(runner, cache.path, auth):
                commit = await _commit(runner, cache.path, "refs/remotes/origin/HEAD")
    if commit is None:
        raise GitFailure("the remote has no default branch (is the repository empty?)")
    return commit


async def _fetch_one(runner: GitRunner, cache: Cache, ref: str, auth: Auth | None) -> str:
    # Not a branch, tag or known commit: a ref outside the refspecs (refs/pull/N/head) or a commit no branch
    # reaches yet. FETCH_HEAD is only written here, under the fetch lock.
    async with cache.fetch_lock:
        fetched = await runner.run(
            "fetch", "--quiet", "--no-tags", "origin", ref, cwd=cache.path, auth=auth, check=False
        )
        commit = await _commit(runner, cache.path, "FETCH_HEAD") if fetched.returncode == 0 else None
    if commit is None:
        raise GitFailure(f"ref {ref!r} not found in the remote: {fetched.stderr.strip() or 'not a commit'}")
    return commit


async def add_worktree(runner: GitRunner, cache: Cache, *, path: Path, branch: str, start: Start) -> None:
    """Register the worktree and its branch (serialised), then check the files out (in parallel with others)."""
    async with cache.admin_lock:
        # A worktree whose directory vanished still holds its branch; forget those first.
        await runner.run("worktree", "prune", cwd=cache.path)
        # -B: a branch left by a run that crashed before release is reset; one checked out in a live worktree
        # makes git refuse ("already checked out"), which is the error we want. A commit as start point means
        # no tracking is set up, so the branch does not claim to follow the ref it started from.
        await runner.run(
            "worktree", "add", "--quiet", "--no-checkout", "-B", branch, str(path), start.commit, cwd=cache.path
        )
        if start.resumed:
            await runner.run("branch", "--quiet", f"--set-upstream-to=origin/{branch}", branch, cwd=cache.path)
    # The checkout writes only this worktree's index and files, so it runs outside the lock.
    await runner.run("reset", "--quiet", "--hard", cwd=path)


async def drop_worktree(runner: GitRunner, cache: Cache, *, path: Path, branch: str | None, keep: bool) -> None:
    """Remove (or, with ``keep``, detach) a worktree and delete its local branch; missing pieces are fine."""
    if keep:
        if (path / ".git").exists():
            # Detach HEAD so the branch can be deleted (and later checked out by a resumed run) while the
            # directory, its commits and uncommitted changes stay for inspection.
            head = await runner.run("rev-parse", "--verify", "--quiet", "HEAD", cwd=path, check=False)
            if head.returncode == 0:
                await runner.run("update-ref", "--no-deref", "HEAD", head.stdout.strip(), cwd=path, check=False)
    else:
        await remove_path(path)
    async with cache.admin_lock:
        await runner.run("worktree", "prune", cwd=cache.path, check=False)
        if branch is not None:
            await runner.run("branch", "--quiet", "-D", branch, cwd=cache.path, check=False)


async def tidy(runner: GitRunner, cache: Cache) -> None:
    """Forget worktrees whose directories are gone, delete branches no worktree has checked out, gc if due."""
    async with cache.fetch_lock, cache.admin_lock:
        await runner.run("worktree", "prune", cwd=cache.path)
        listing = await runner.run(
            "for-each-ref", "--format=%(worktreepath)%00%(refname:short)", "refs/heads/", cwd=cache.path
        )
        orphans = [name for path, _, name in (line.partition("\0") for line in listing.stdout.splitlines()) if not path]
        if orphans:
            await runner.run("branch", "--quiet", "-D", *orphans, cwd=cache.path)
        await runner.run("-c", "gc.auto=6700", "gc", "--auto", "--quiet", cwd=cache.path)

"""Per-run workspaces: a fresh git worktree of the target repository for each agent run.

Imported by the execution-grid worker (and its tests). A :class:`WorkspaceManager` keeps one bare cache per clone
URL under ``cache_dir`` so that repeat runs fetch instead of cloning, and makes each run's working tree a
``git worktree`` of that cache under ``root/<run_id>``, on its own branch.

Operational notes:

- One manager per ``cache_dir`` per host: the locks that serialise git's writes to a cache live in this process.
- A worktree's git directory is inside its cache (``<cache>/worktrees/<run_id>``) and its commits go to the cache's
  object store: a sandboxed agent needs write access to the cache as well as to ``root/<run_id>``.
- Pushing is the agent's business: ``origin`` in a worktree is the clone URL, and ``git push`` (or ``git push origin
  <branch>``) pushes the run's branch; give the agent process :func:`git_auth_env` for a private repository.
"""

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from execution_grid.workspaces.cache import (
    Cache,
    Identity,
    Start,
    add_worktree,
    cache_name,
    drop_worktree,
    ensure_fresh,
    is_temporary,
    resolve_start,
    tidy,
)
from execution_grid.workspaces.files import remove_path
from execution_grid.workspaces.git import Auth, GitFailure, GitRunner, auth_for

__all__ = ["Workspace", "WorkspaceError", "WorkspaceManager", "git_auth_env"]

_log = structlog.get_logger(__name__)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# git's own syntax: [user@]host:path, a colon before any slash.
_SCP_LIKE = re.compile(r"[^/]+:")
_DEFAULT_USER_NAME = "agent-grid"
_DEFAULT_USER_EMAIL = "agent-grid@users.noreply.github.com"


class WorkspaceError(Exception):
    """A workspace could not be prepared or released; the message says why and never contains a token."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """One run's working directory, as :meth:`WorkspaceManager.prepare` made it."""

    run_id: str
    path: Path
    """The working tree the agent runs in."""
    branch: str | None
    """The local branch checked out for the agent; None for an empty workspace."""
    base_commit: str | None
    """The commit the branch started at (the resumed branch's tip when ``resumed``)."""
    cache: Path | None
    """The bare cache the worktree belongs to; None for an empty workspace."""
    resumed: bool = False
    """The remote already had ``branch`` (a previous run's pushed work), so the run continues from it."""


def git_auth_env(clone_url: str, token: str) -> dict[str, str]:
    """Environment variables that let a git process authenticate to ``clone_url``'s host with ``token``.

    Git reads them as configuration (an ``http.extraHeader`` scoped to the URL's origin), so the token is neither
    in argv nor in any file. Merge them into the agent's environment when it must push to a private repository.
    """
    auth = auth_for(clone_url, token)
    return dict(auth.env) if auth is not None else {}


class WorkspaceManager:
    """Prepares and releases per-run workspaces from local bare caches of the target repositories.

    Args:
        root: Directory holding one working directory per run (``root/<run_id>``).
        cache_dir: Directory holding the bare caches (``<owner>-<repo>-<hash of URL>.git``) and git's HOME.
        git: The git executable.
        fetch_timeout_s: Deadline of every git command, sized for a first clone of the largest repository.
        min_refetch_interval_s: Prepares within this long of the last fetch of a cache reuse it instead of fetching
            (0: always fetch, though prepares waiting on a running fetch share it).
        user_name: Commit identity written into a cache's config when git's configuration has none.
        user_email: See ``user_name``.
    """

    def __init__(
        self,
        *,
        root: Path,
        cache_dir: Path,
        git: str = "git",
        fetch_timeout_s: float = 300,
        min_refetch_interval_s: float = 0.0,
        user_name: str = _DEFAULT_USER_NAME,
        user_email: str = _DEFAULT_USER_EMAIL,
    ) -> None:
        self._root = root.absolute()
        self._cache_dir = cache_dir.absolute()
        self._runner = GitRunner(git=git, home=self._cache_dir / ".home", timeout_s=fetch_timeout_s)
        self._min_refetch_interval_s = min_refetch_interval_s
        self._identity = Identity(user_name, user_email)
        self._caches: dict[Path, Cache] = {}
        self._active: set[str] = set()

    async def prepare(
        self,
        run_id: str,
        *,
        clone_url: str | None,
        ref: str | None = None,
        branch: str | None = None,
        token: str | None = None,
    ) -> Workspace:
        """Make ``root/<run_id>``: an empty directory, or a worktree of ``clone_url`` on a branch of its own.

        Args:
            run_id: Names the directory (letters, digits, ``.``, ``_``, ``-``); must not be in use.
            clone_url: The repository (``https://``, ``ssh://``, ``file://``, ``user@host:path`` or a local path);
                None for an empty directory without git.
            ref: Where the branch starts: a branch, tag, full ref (e.g. ``refs/pull/7/head``) or commit of the
                remote. Default: the remote's default branch.
            branch: The local branch to create (default ``agent-grid/<run_id>``). When the remote already has it,
                the worktree starts from it instead of ``ref``, so a resumed run continues the pushed work.
            token: For a private repository over HTTPS; used for this fetch only, through git's environment.

        Raises:
            WorkspaceError: Invalid arguments, unreachable remote, unknown ref, git failure or timeout. Nothing is
                left under ``root`` then.
        """
        # What this caller must see is the remote as of now: a fetch that starts later serves it too.
        requested_at = time.monotonic()
        if not _RUN_ID.fullmatch(run_id):
            raise WorkspaceError(f"invalid run id {run_id!r}")
        path = self._root / run_id
        if run_id in self._active or path.exists() or path.is_symlink():
            raise WorkspaceError(f"workspace {run_id!r} already exists at {path}")
        self._ensure_dirs()
        self._active.add(run_id)
        try:
            if clone_url is None:
                path.mkdir()
                return Workspace(run_id=run_id, path=path, branch=None, base_commit=None, cache=None)
            return await self._prepare_worktree(
                run_id,
                path,
                clone_url=clone_url,
                ref=ref,
                branch=branch or f"agent-grid/{run_id}",
                token=token,
                requested_at=requested_at,
            )
        except OSError as exc:
            self._active.discard(run_id)
            raise WorkspaceError(f"cannot create {path}: {exc.strerror}") from exc
        except BaseException:
            self._active.discard(run_id)
            raise

    async def release(self, workspace: Workspace, *, keep: bool) -> None:
        """End a run's use of its workspace; calling it again is harmless.

        The local branch is deleted either way (pushed work lives in the remote). ``keep=False`` removes the
        directory and the worktree's registration; ``keep=True`` leaves the directory, detached at the run's last
        commit, for inspection until :meth:`prune` removes it.

        Raises:
            WorkspaceError: The directory could not be removed.
        """
        try:
            if workspace.cache is None:
                if not keep:
                    await remove_path(workspace.path)
            else:
                await drop_worktree(
                    self._runner,
                    self._cache_at(workspace.cache),
                    path=workspace.path,
                    branch=workspace.branch,
                    keep=keep,
                )
        except OSError as exc:
            raise WorkspaceError(f"cannot remove {workspace.path}: {exc.strerror}") from exc
        except GitFailure as exc:
            raise WorkspaceError(f"cannot release {workspace.path}: {exc}") from exc
        finally:
            self._active.discard(workspace.run_id)

    async def prune(self, *, keep: Iterable[str] = ()) -> list[str]:
        """Clean up after runs that ended without :meth:`release` (a crash, a restart); call it at worker start.

        Removes every directory under ``root`` whose run id is neither in ``keep`` nor a workspace of this manager
        still in use, half-made caches, worktree registrations whose directories are gone and the local branches no
        worktree has checked out; then lets git garbage-collect each cache if due. A cache that fails is logged
        and skipped.

        Args:
            keep: Run ids whose directories stay (runs still going on, or kept for inspection).

        Returns:
            The run ids whose directories were removed.
        """
        self._ensure_dirs()
        keep_ids = set(keep) | self._active
        removed: list[str] = []
        for entry in sorted(self._root.iterdir()):
            if entry.name not in keep_ids:
                await remove_path(entry)
                removed.append(entry.name)
        in_progress = {cache.creating for cache in self._caches.values()}
        for entry in sorted(self._cache_dir.iterdir()):
            if is_temporary(entry) and entry not in in_progress:
                await remove_path(entry)
            elif entry.suffix == ".git" and entry.is_dir():
                try:
                    await tidy(self._runner, self._cache_at(entry))
                except GitFailure as exc:
                    _log.warning("workspace_cache_tidy_failed", cache=str(entry), error=str(exc))
        return removed

    async def _prepare_worktree(
        self,
        run_id: str,
        path: Path,
        *,
        clone_url: str,
        ref: str | None,
        branch: str,
        token: str | None,
        requested_at: float,
    ) -> Workspace:
        url = _normalise_url(clone_url)
        _check_ref(ref)
        await self._check_branch(branch)
        cache = self._cache_at(self._cache_dir / cache_name(url))
        auth = auth_for(url, token)
        start = await self._update_and_resolve(
            cache, url=url, ref=ref, branch=branch, auth=auth, requested_at=requested_at
        )
        try:
            await add_worktree(self._runner, cache, path=path, branch=branch, start=start)
        except BaseException as exc:
            # The directory did not exist before (checked by prepare), so whatever is there now is this attempt's.
            await drop_worktree(self._runner, cache, path=path, branch=branch, keep=False)
            if isinstance(exc, GitFailure):
                raise WorkspaceError(f"cannot create the worktree of {url} for run {run_id}: {exc}") from exc
            raise
        return Workspace(
            run_id=run_id,
            path=path,
            branch=branch,
            base_commit=start.commit,
            cache=cache.path,
            resumed=start.resumed,
        )

    async def _update_and_resolve(
        self, cache: Cache, *, url: str, ref: str | None, branch: str, auth: Auth | None, requested_at: float
    ) -> Start:
        try:
            await ensure_fresh(
                self._runner,
                cache,
                clone_url=url,
                auth=auth,
                requested_at=requested_at,
                min_refetch_interval_s=self._min_refetch_interval_s,
                identity=self._identity,
            )
        except GitFailure as exc:
            raise WorkspaceError(f"cannot fetch {url}: {exc}") from exc
        try:
            return await resolve_start(self._runner, cache, ref=ref, branch=branch, auth=auth)
        except GitFailure as exc:
            raise WorkspaceError(f"cannot find where to start in {url}: {exc}") from exc

    async def _check_branch(self, branch: str) -> None:
        if branch.startswith("-"):
            raise WorkspaceError(f"invalid branch name {branch!r}")
        result = await self._runner.run("check-ref-format", "--branch", branch, cwd=self._root, check=False)
        if result.returncode != 0:
            raise WorkspaceError(f"invalid branch name {branch!r}")

    def _cache_at(self, path: Path) -> Cache:
        cache = self._caches.get(path)
        if cache is None:
            cache = self._caches[path] = Cache(path)
        return cache

    def _ensure_dirs(self) -> None:
        for directory in (self._root, self._cache_dir, self._runner.home):
            directory.mkdir(parents=True, exist_ok=True)


def _normalise_url(clone_url: str) -> str:
    url = clone_url.strip()
    if not url or url.startswith("-") or any(char.isspace() or not char.isprintable() for char in url):
        raise WorkspaceError("invalid clone URL")
    if "://" in url:
        parts = urlsplit(url)
        # A token in the URL would be written to the cache's config (remote.origin.url) for good.
        if parts.password is not None or (parts.username is not None and parts.scheme in ("http", "https")):
            raise WorkspaceError("the clone URL must not carry credentials; pass token= instead")
        return url
    if _SCP_LIKE.match(url):
        return url
    # A local path: absolute, because git resolves it from the cache's directory later on.
    return str(Path(url).absolute())


def _check_ref(ref: str | None) -> None:
    # The ref reaches git as a positional argument (rev-parse, fetch): no option, no refspec, no whitespace.
    if ref is not None and (
        not ref or ref.startswith("-") or ":" in ref or any(char.isspace() or not char.isprintable() for char in ref)
    ):
        raise WorkspaceError(f"invalid ref {ref!r}")

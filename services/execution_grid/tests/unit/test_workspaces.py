import asyncio
import base64
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from execution_grid.workspaces.public_workspaces import Workspace, WorkspaceError, WorkspaceManager, git_auth_env

REAL_GIT = shutil.which("git") or "git"
TOKEN = "ghs_SuperSecretToken0123456789"
SEED_IDENTITY = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


@dataclass
class Upstream:
    bare: Path
    seed: Path
    home: Path
    commits: dict[str, str]

    @property
    def url(self) -> str:
        return self.bare.as_uri()


def git_env(home: Path, *, identity: bool = False) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LANG": "C",
    }
    return env | SEED_IDENTITY if identity else env


async def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        REAL_GIT,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"git {' '.join(args)}: {err.decode()}"
    return out.decode().strip()


async def commit_and_push(upstream: Upstream, branch: str, message: str) -> str:
    env = git_env(upstream.home, identity=True)
    if await git("symbolic-ref", "--short", "HEAD", cwd=upstream.seed, env=env) != branch:
        await git("checkout", "--quiet", branch, cwd=upstream.seed, env=env)
    (upstream.seed / f"{message}.txt").write_text(message)
    await git("add", ".", cwd=upstream.seed, env=env)
    await git("commit", "--quiet", "-m", message, cwd=upstream.seed, env=env)
    await git("push", "--quiet", "origin", branch, cwd=upstream.seed, env=env)
    sha = await git("rev-parse", "HEAD", cwd=upstream.seed, env=env)
    upstream.commits[message] = sha
    return sha


@pytest.fixture
async def upstream(tmp_path: Path) -> Upstream:
    """A bare "remote" with main (one, two), tag v1 on one, branch feature (feat) and refs/pull/1/head (pr)."""
    home = tmp_path / "upstream-home"
    home.mkdir()
    env = git_env(home, identity=True)
    bare = tmp_path / "upstream.git"
    await git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path, env=env)
    seed = tmp_path / "seed"
    await git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path, env=env)
    await git("checkout", "--quiet", "-b", "main", cwd=seed, env=env)
    result = Upstream(bare=bare, seed=seed, home=home, commits={})
    await commit_and_push(result, "main", "one")
    await git("tag", "v1", cwd=seed, env=env)
    await git("push", "--quiet", "origin", "v1", cwd=seed, env=env)
    await git("checkout", "--quiet", "-b", "feature", cwd=seed, env=env)
    await commit_and_push(result, "feature", "feat")
    await git("checkout", "--quiet", "-b", "pr", "main", cwd=seed, env=env)
    await commit_and_push(result, "pr", "pr")
    # A ref outside refs/heads and refs/tags, like GitHub's pull-request heads.
    await git("push", "--quiet", "origin", "pr:refs/pull/1/head", ":refs/heads/pr", cwd=seed, env=env)
    await commit_and_push(result, "main", "two")
    return result


@dataclass
class GitLog:
    """Every git command the manager ran, through a wrapper script: which auth key was set, and argv."""

    path: Path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def count(self, subcommand: str) -> int:
        return sum(1 for line in self.lines() if line.split("|", 1)[1].split(" ")[0] == subcommand)

    def inits(self) -> int:
        return sum(1 for line in self.lines() if " init " in f" {line.split('|', 1)[1]} ")


def write_wrapper(tmp_path: Path, name: str, body: str) -> Path:
    wrapper = tmp_path / name
    wrapper.write_text(f'#!/bin/sh\n{body}\nexec {REAL_GIT} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def git_log(tmp_path: Path) -> GitLog:
    return GitLog(tmp_path / "git-argv.log")


ManagerFactory = Callable[..., WorkspaceManager]


@pytest.fixture
def make_manager(tmp_path: Path, git_log: GitLog) -> ManagerFactory:
    logging_git = write_wrapper(
        tmp_path, "logging-git", f'printf \'%s|%s\\n\' "${{GIT_CONFIG_KEY_0:-}}" "$*" >> {git_log.path}'
    )

    def make(**overrides: object) -> WorkspaceManager:
        options: dict[str, object] = {
            "root": tmp_path / "runs",
            "cache_dir": tmp_path / "caches",
            "git": str(logging_git),
            "fetch_timeout_s": 30,
        }
        options.update(overrides)
        return WorkspaceManager(**options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def manager(make_manager: ManagerFactory) -> WorkspaceManager:
    return make_manager()


def caches(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "caches").iterdir() if p.name != ".home")


def run_dirs(tmp_path: Path) -> list[str]:
    root = tmp_path / "runs"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def worktree_paths(cache: Path, home: Path) -> list[str]:
    listing = await git("worktree", "list", "--porcelain", cwd=cache, env=git_env(home))
    return [line.removeprefix("worktree ") for line in listing.splitlines() if line.startswith("worktree ")][1:]


async def local_branches(cache: Path, home: Path) -> list[str]:
    out = await git("for-each-ref", "--format=%(refname:short)", "refs/heads/", cwd=cache, env=git_env(home))
    return out.splitlines()


async def test_empty_workspace_is_a_plain_directory(manager: WorkspaceManager, tmp_path: Path) -> None:
    workspace = await manager.prepare("empty-1", clone_url=None)

    assert workspace == Workspace(run_id="empty-1", path=tmp_path / "runs" / "empty-1", branch=None,
                                  base_commit=None, cache=None)  # fmt: skip
    assert workspace.path.is_dir()
    assert list(workspace.path.iterdir()) == []
    await manager.release(workspace, keep=False)
    await manager.release(workspace, keep=False)
    assert not workspace.path.exists()


@pytest.mark.parametrize("url_form", ["file-url", "plain-path"])
async def test_first_prepare_clones_and_the_next_one_only_fetches(
    make_manager: ManagerFactory,
    upstream: Upstream,
    git_log: GitLog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url_form: str,
) -> None:
    manager = make_manager()
    clone_url = upstream.url if url_form == "file-url" else str(upstream.bare)

    started = time.perf_counter()
    first = await manager.prepare("r1", clone_url=clone_url)
    first_s = time.perf_counter() - started
    [cache] = caches(tmp_path)
    inode = cache.stat().st_ino
    started = time.perf_counter()
    second = await manager.prepare("r2", clone_url=clone_url)
    cached_s = time.perf_counter() - started

    with capsys.disabled():
        print(f"\n[{url_form}] prepare: first (clone) {first_s * 1000:.0f} ms, cached {cached_s * 1000:.0f} ms")  # noqa: T201
    assert git_log.inits() == 1
    assert git_log.count("fetch") == 2
    assert caches(tmp_path) == [cache]
    assert cache.stat().st_ino == inode
    assert "-upstream-" in cache.name
    assert cache.name.endswith(".git")
    for workspace, run_id in ((first, "r1"), (second, "r2")):
        assert workspace.path == tmp_path / "runs" / run_id
        assert workspace.branch == f"agent-grid/{run_id}"
        assert workspace.base_commit == upstream.commits["two"]
        assert workspace.cache == cache
        assert not workspace.resumed
        assert (workspace.path / "two.txt").read_text() == "two"
        env = git_env(tmp_path)
        assert await git("symbolic-ref", "--short", "HEAD", cwd=workspace.path, env=env) == workspace.branch
        assert await git("status", "--porcelain", cwd=workspace.path, env=env) == ""


async def test_new_upstream_commits_are_seen_by_the_next_prepare(manager: WorkspaceManager, upstream: Upstream) -> None:
    before = await manager.prepare("r1", clone_url=upstream.url)
    three = await commit_and_push(upstream, "main", "three")

    after = await manager.prepare("r2", clone_url=upstream.url)

    assert before.base_commit == upstream.commits["two"]
    assert after.base_commit == three
    assert (after.path / "three.txt").exists()


async def test_min_refetch_interval_reuses_the_last_fetch(
    make_manager: ManagerFactory, upstream: Upstream, git_log: GitLog
) -> None:
    manager = make_manager(min_refetch_interval_s=3600)
    await manager.prepare("r1", clone_url=upstream.url)
    await commit_and_push(upstream, "main", "three")

    second = await manager.prepare("r2", clone_url=upstream.url)

    assert git_log.count("fetch") == 1
    assert second.base_commit == upstream.commits["two"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("v1", "one"),
        ("refs/tags/v1", "one"),
        ("feature", "feat"),
        ("refs/heads/feature", "feat"),
        ("main", "two"),
        ("refs/pull/1/head", "pr"),
        ("commit:feat", "feat"),
        ("commit:pr", "pr"),
    ],
)
async def test_ref_selects_the_start_commit(
    manager: WorkspaceManager, upstream: Upstream, ref: str, expected: str
) -> None:
    # "commit:X" stands for the full SHA of commit X; the pr commit is reachable from no branch or tag.
    start = upstream.commits[ref.removeprefix("commit:")] if ref.startswith("commit:") else ref

    workspace = await manager.prepare("r1", clone_url=upstream.url, ref=start)

    assert workspace.base_commit == upstream.commits[expected]
    assert (workspace.path / f"{expected}.txt").exists()
    assert workspace.branch == "agent-grid/r1"


async def test_push_from_the_worktree_reaches_the_upstream(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    workspace = await manager.prepare("r1", clone_url=upstream.url)
    # The agent's environment has no identity of its own: the cache's user.name/user.email apply.
    env = git_env(tmp_path / "agent-home")
    (workspace.path / "agent.txt").write_text("work")
    await git("add", "agent.txt", cwd=workspace.path, env=env)
    await git("commit", "--quiet", "-m", "agent work", cwd=workspace.path, env=env)

    await git("push", "--quiet", "origin", "agent-grid/r1", cwd=workspace.path, env=env)

    head = await git("rev-parse", "HEAD", cwd=workspace.path, env=env)
    assert await git("rev-parse", "refs/heads/agent-grid/r1", cwd=upstream.bare, env=env) == head
    author = await git("log", "-1", "--format=%an <%ae>", "agent-grid/r1", cwd=upstream.bare, env=env)
    assert author == "agent-grid <agent-grid@users.noreply.github.com>"


async def test_a_pushed_wip_branch_is_resumed(manager: WorkspaceManager, upstream: Upstream, tmp_path: Path) -> None:
    env = git_env(tmp_path / "agent-home")
    first = await manager.prepare("r1", clone_url=upstream.url, branch="wip/issue-7")
    (first.path / "wip.txt").write_text("half done")
    await git("add", "wip.txt", cwd=first.path, env=env)
    await git("commit", "--quiet", "-m", "wip", cwd=first.path, env=env)
    # A bare `git push` works too: push.default=current sends the branch to the same name on origin.
    await git("push", "--quiet", cwd=first.path, env=env)
    pushed = await git("rev-parse", "HEAD", cwd=first.path, env=env)
    await manager.release(first, keep=False)

    resumed = await manager.prepare("r2", clone_url=upstream.url, ref="v1", branch="wip/issue-7")

    assert resumed.resumed
    assert resumed.branch == "wip/issue-7"
    assert resumed.base_commit == pushed
    assert (resumed.path / "wip.txt").read_text() == "half done"
    assert await git("rev-parse", "--abbrev-ref", "@{upstream}", cwd=resumed.path, env=env) == "origin/wip/issue-7"


async def test_ten_concurrent_prepares_share_one_clone(
    manager: WorkspaceManager, upstream: Upstream, git_log: GitLog, tmp_path: Path
) -> None:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(manager.prepare(f"r{i}", clone_url=upstream.url)) for i in range(10)]
    workspaces = [task.result() for task in tasks]

    assert len({workspace.path for workspace in workspaces}) == 10
    assert all((workspace.path / "two.txt").exists() for workspace in workspaces)
    # Everyone queued behind the first prepare's clone, which started after they asked: no second fetch.
    assert git_log.count("fetch") == 1
    [cache] = caches(tmp_path)
    assert sorted(await worktree_paths(cache, tmp_path)) == sorted(str(w.path) for w in workspaces)

    async with asyncio.TaskGroup() as group:
        for workspace in workspaces:
            group.create_task(manager.release(workspace, keep=False))
    assert await worktree_paths(cache, tmp_path) == []
    assert await local_branches(cache, tmp_path) == []
    assert run_dirs(tmp_path) == []


async def test_bad_url_fails_and_leaves_nothing(manager: WorkspaceManager, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="cannot fetch"):
        await manager.prepare("r1", clone_url=(tmp_path / "missing.git").as_uri())

    assert run_dirs(tmp_path) == []
    assert caches(tmp_path) == []
    # The run id is free again.
    await manager.prepare("r1", clone_url=None)


async def test_bad_ref_fails_and_leaves_nothing(manager: WorkspaceManager, upstream: Upstream, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no-such-branch"):
        await manager.prepare("r1", clone_url=upstream.url, ref="no-such-branch")

    assert run_dirs(tmp_path) == []
    [cache] = caches(tmp_path)
    assert await worktree_paths(cache, tmp_path) == []
    assert await local_branches(cache, tmp_path) == []


async def test_empty_upstream_fails_and_leaves_nothing(manager: WorkspaceManager, tmp_path: Path) -> None:
    empty = tmp_path / "empty.git"
    await git("init", "--quiet", "--bare", str(empty), cwd=tmp_path, env=git_env(tmp_path))

    with pytest.raises(WorkspaceError, match="no default branch"):
        await manager.prepare("r1", clone_url=empty.as_uri())

    assert run_dirs(tmp_path) == []


async def test_a_branch_checked_out_by_a_live_run_is_refused_without_harming_it(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    live = await manager.prepare("r1", clone_url=upstream.url, branch="shared")

    with pytest.raises(WorkspaceError, match="already checked out"):
        await manager.prepare("r2", clone_url=upstream.url, branch="shared")

    assert run_dirs(tmp_path) == ["r1"]
    assert live.cache is not None
    assert await worktree_paths(live.cache, tmp_path) == [str(live.path)]
    assert await local_branches(live.cache, tmp_path) == ["shared"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"run_id": "../escape", "clone_url": None}, "invalid run id"),
        ({"run_id": "r1", "clone_url": "https://user:hunter2@example.com/o/r.git"}, "must not carry credentials"),
        ({"run_id": "r1", "clone_url": "https://example.com/o/r.git", "ref": "--upload-pack=evil"}, "invalid ref"),
        ({"run_id": "r1", "clone_url": "https://example.com/o/r.git", "branch": "bad..name"}, "invalid branch"),
    ],
)
async def test_invalid_arguments_are_refused_before_running_git(
    manager: WorkspaceManager, git_log: GitLog, tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(WorkspaceError, match=message) as raised:
        await manager.prepare(**arguments)

    assert "hunter2" not in str(raised.value)
    assert git_log.count("fetch") == 0
    assert run_dirs(tmp_path) == []


async def test_release_removes_the_worktree_and_its_branch(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    workspace = await manager.prepare("r1", clone_url=upstream.url)
    assert workspace.cache is not None
    assert await worktree_paths(workspace.cache, tmp_path) == [str(workspace.path)]

    await manager.release(workspace, keep=False)
    await manager.release(workspace, keep=False)

    assert not workspace.path.exists()
    assert await worktree_paths(workspace.cache, tmp_path) == []
    assert await local_branches(workspace.cache, tmp_path) == []


async def test_release_with_keep_leaves_the_directory_until_prune(
    manager: WorkspaceManager, upstream: Upstream, tmp_path: Path
) -> None:
    env = git_env(tmp_path / "agent-home")
    workspace = await manager.prepare("r1", clone_url=upstream.url)
    assert workspace.cache is not None
    (workspace.path / "notes.txt").write_text("uncommitted")
    await git("commit", "--quiet", "--allow-empty", "-m", "agent", cwd=workspace.path, env=env)
    last = await git("rev-parse", "HEAD", cwd=workspace.path, env=env)

    await manager.release(workspace, keep=True)
    await manager.release(workspace, keep=True)

    assert (workspace.path / "notes.txt").read_text() == "uncommitted"
    assert await git("rev-parse", "HEAD", cwd=workspace.path, env=env) == last
    # Detached, so the branch name is free for a resumed run.
    assert await local_branches(workspace.cache, tmp_path) == []
    assert await manager.prune(keep={"r1"}) == []
    assert workspace.path.exists()
    assert await manager.prune() == ["r1"]
    assert await worktree_paths(workspace.cache, tmp_path) == []


async def test_prune_after_a_crash_cleans_worktrees_branches_and_half_clones(
    make_manager: ManagerFactory, upstream: Upstream, tmp_path: Path
) -> None:
    crashed = make_manager()
    gone = await crashed.prepare("gone", clone_url=upstream.url)
    stale = await crashed.prepare("stale", clone_url=upstream.url)
    running = await crashed.prepare("running", clone_url=upstream.url)
    assert gone.cache is not None
    shutil.rmtree(gone.path)
    half_clone = gone.cache.with_name(".tmp-deadbeef-" + gone.cache.name)
    half_clone.mkdir()

    restarted = make_manager()
    removed = await restarted.prune(keep={"running"})

    assert removed == ["stale"]
    assert run_dirs(tmp_path) == ["running"]
    assert await worktree_paths(gone.cache, tmp_path) == [str(running.path)]
    assert await local_branches(gone.cache, tmp_path) == ["agent-grid/running"]
    assert not half_clone.exists()
    assert not stale.path.exists()
    # The survivors still work, and the pruned run ids can be prepared again.
    await restarted.prepare("gone", clone_url=upstream.url)


def files_containing(directory: Path, needles: list[bytes]) -> list[Path]:
    return [
        path
        for path in directory.rglob("*")
        if path.is_file() and not path.is_symlink() and any(needle in path.read_bytes() for needle in needles)
    ]


async def test_the_token_reaches_git_only_through_the_environment(
    manager: WorkspaceManager, upstream: Upstream, git_log: GitLog, tmp_path: Path
) -> None:
    workspace = await manager.prepare("r1", clone_url=upstream.url, token=TOKEN)
    await commit_and_push(upstream, "main", "three")
    await manager.prepare("r2", clone_url=upstream.url, token=TOKEN)

    encoded = base64.b64encode(f"x-access-token:{TOKEN}".encode())
    argv_log = git_log.path.read_bytes()
    assert TOKEN.encode() not in argv_log
    assert encoded not in argv_log
    # Every network command (both fetches, set-head) got the header through GIT_CONFIG_*; no local one did.
    network = [line for line in git_log.lines() if line.startswith("http.extraHeader|")]
    assert [line.split("|")[1].split(" ")[0] for line in network] == ["fetch", "remote", "fetch"]
    assert files_containing(tmp_path / "caches", [TOKEN.encode(), encoded]) == []
    assert files_containing(workspace.path, [TOKEN.encode(), encoded]) == []


async def test_the_token_is_sent_as_a_scoped_header_and_git_never_prompts(
    manager: WorkspaceManager, tmp_path: Path
) -> None:
    requests: list[str] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append((await reader.readuntil(b"\r\n\r\n")).decode())
        writer.write(b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="x"\r\n')
        writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clone_url = f"http://127.0.0.1:{port}/owner/private.git"
    async with server, asyncio.timeout(10):
        with pytest.raises(WorkspaceError) as raised:
            await manager.prepare("r1", clone_url=clone_url, token=TOKEN)

    expected = git_auth_env(clone_url, TOKEN)["GIT_CONFIG_VALUE_0"]
    assert requests
    assert f"\r\n{expected}\r\n".lower() in requests[0].lower()
    assert "terminal prompts disabled" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert run_dirs(tmp_path) == []
    assert caches(tmp_path) == []


async def test_a_fetch_that_hangs_times_out_and_leaves_no_half_cache(
    make_manager: ManagerFactory, upstream: Upstream, tmp_path: Path
) -> None:
    hanging_git = write_wrapper(tmp_path, "hanging-git", 'if [ "$1" = fetch ]; then exec sleep 30; fi')
    manager = make_manager(git=str(hanging_git), fetch_timeout_s=0.5)

    started = time.perf_counter()
    with pytest.raises(WorkspaceError, match="timed out"):
        await manager.prepare("r1", clone_url=upstream.url)

    assert time.perf_counter() - started < 5
    assert run_dirs(tmp_path) == []
    assert caches(tmp_path) == []

import asyncio
import itertools
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunMode
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import HttpSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_testing import InMemoryBroker
from execution_grid.runner.public_runner import BubblewrapRunner, ProcessSpec, ResourceLimits
from execution_grid.settings import Settings, WorkspaceSettings
from execution_grid.worker import installation_paths, run_worker


async def test_worker_consumes_launches_serves_health_and_stops_on_request(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    port = find_free_port()
    settings = Settings(
        queues=QueueSettings(prefix="unit"),
        http=HttpSettings(port=port),
        state_dir=tmp_path,
        workspace=WorkspaceSettings(clone_base_url=None),
    )
    queues = await resolve_queues(broker, settings.queues)
    await Publisher(transport=broker, queue_url=queues.launches.url).publish(
        wrap(
            LaunchAgent(run_id="r1", issue=IssueRef(repo="a/b", number=1), mode=RunMode.WORK, agent_kind="generic"),
            producer="test",
        )
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, transport=broker))

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client, asyncio.timeout(10):
        while True:
            try:
                health = await client.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        while broker.messages(queues.launches.url):
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(10):
        await worker

    assert health.status_code == 200
    assert health.json()["checks"] == {"broker": "ok", "consumer": "ok"}


def test_the_sandbox_keeps_the_installation_readable_but_never_the_checkout_tmp_or_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    venv, source, state = checkout / ".venv", checkout / "services" / "grid" / "src", checkout / ".agent-grid"
    for directory in (venv / "bin", source, state):
        directory.mkdir(parents=True)
    monkeypatch.chdir(checkout)
    monkeypatch.setattr(sys, "prefix", str(venv))
    # `python -m` puts the working directory first; the rest: the stdlib zip, a source dir, the checkout again.
    monkeypatch.setattr(sys, "path", ["", "/nonexistent/python312.zip", str(source), str(checkout), "/tmp"])
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv / "bin"), ".", "/tmp", "/usr/bin"]))

    kept = installation_paths(state)

    assert venv in kept
    assert source in kept
    assert venv / "bin" in kept
    assert checkout not in kept, "the working directory (and anything holding the state dir) stays hidden"
    assert Path("/tmp") not in kept


def test_the_bubblewrap_sandbox_hides_secrets_and_binds_back_what_the_run_needs(tmp_path: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    secret_dir, secret_file = tmp_path / "secrets", tmp_path / "token.txt"
    secret_dir.mkdir()
    secret_file.write_text("s3cret")
    kept = Path("/tmp") / f"agent-grid-kept-{os.getpid()}"
    kept.mkdir(exist_ok=True)
    try:
        runner = BubblewrapRunner(hide=(secret_dir, secret_file), keep_readable=(kept, kept / "nested", secret_dir))
        workspace = tmp_path / "workspace"
        argv = runner.sandbox(
            ProcessSpec(
                argv=("agent",), cwd=workspace, env={}, stdin=None, limits=ResourceLimits(), writable=(workspace,)
            )
        )
    finally:
        kept.rmdir()
    pairs = list(itertools.pairwise(argv))
    assert ("--tmpfs", str(secret_dir)) in pairs
    assert argv[argv.index(str(secret_file)) - 2 : argv.index(str(secret_file))] == ["--ro-bind", "/dev/null"]
    assert ("--ro-bind", str(kept)) in pairs
    assert ("--ro-bind", str(kept / "nested")) not in pairs, "nested paths are covered by their parent"
    assert ("--ro-bind", str(secret_dir)) not in pairs, "a hidden path is never bound back readable"
    # The writable binds come after the masks, so the run's own directories show through them.
    assert argv.index("--bind") > argv.index(str(secret_dir))

"""Starting and stopping: the async context manager on a free port, and the console script with a seed file."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from agent_grid_github_test_server.public_server import FakeGitHub, bind_socket, serve_github


async def test_serve_github_picks_a_free_port_and_stops_cleanly() -> None:
    github = FakeGitHub()
    github.add_user("zoe")
    github.add_repo("zoe", "r")
    token = github.add_token("zoe")
    async with serve_github(github) as running:
        assert running.base_url.startswith("http://127.0.0.1:")
        assert running.base_url.endswith("/")
        assert running.graphql_url == f"{running.base_url}graphql"
        async with httpx.AsyncClient(base_url=running.base_url) as client:
            answer = await client.get("repos/zoe/r", headers={"Authorization": f"Bearer {token}"})
            assert answer.json()["url"] == f"{running.base_url}repos/zoe/r"
    async with httpx.AsyncClient() as client:
        try:
            await client.get(running.base_url)
            stopped = False
        except httpx.ConnectError:
            stopped = True
    assert stopped


def test_the_console_script_serves_a_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "users": [{"login": "zoe"}],
                "repos": [{"owner": "zoe", "name": "demo"}],
                "tokens": [{"login": "zoe", "token": "ghp_zoe"}],
                "issues": [{"owner": "zoe", "repo": "demo", "title": "Seeded", "author": "zoe"}],
            }
        )
    )
    with bind_socket("127.0.0.1", 0) as probe:
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_grid_github_test_server", "--port", str(port), "--seed", str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # logged once the port listens: requests queue until uvicorn accepts
        assert "github_test_server_listening" in line, line
        answer = httpx.get(
            f"http://127.0.0.1:{port}/repos/zoe/demo/issues/1", headers={"Authorization": "token ghp_zoe"}, timeout=10
        )
        assert (answer.status_code, answer.json()["title"]) == (200, "Seeded")
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it captured (so the exit status says why).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output

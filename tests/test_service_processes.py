"""Each service's console entry point, as a real process on the real broker: it becomes healthy, serves
metrics, and exits cleanly and promptly on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agent_grid_runtime.public_broker import find_free_port

pytestmark = pytest.mark.connected

SERVICES = [
    ("agent-grid-issue-tracker", "ISSUE_TRACKER_"),
    ("agent-grid-coordinator", "COORDINATOR_"),
    ("agent-grid-execution-grid", "EXECUTION_GRID_"),
]


@pytest.mark.parametrize(("command", "prefix"), SERVICES)
def test_service_process_is_healthy_and_stops_gracefully_on_sigterm(
    command: str, prefix: str, sqs_endpoint: str, tmp_path: Path
) -> None:
    port = find_free_port()
    env = {
        **os.environ,
        f"{prefix}AWS__ENDPOINT_URL": sqs_endpoint,
        f"{prefix}HTTP__PORT": str(port),
        f"{prefix}QUEUES__PREFIX": f"proc{port}",
        f"{prefix}LOG__FORMAT": "json",
        # The coordinator needs a tracker and a ledger to start; nothing here makes it call the tracker.
        "COORDINATOR_GITHUB__API_URL": "http://127.0.0.1:9/",
        "COORDINATOR_GITHUB__TOKEN": "unused",
        "COORDINATOR_LEDGER_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}",
    }
    executable = Path(sys.executable).parent / command
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen([str(executable)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert health is not None, (tmp_path / "service.log").read_text()
        assert health.status_code == 200, health.text
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # Each service reads every queue's depth from the broker when scraped.
        assert "agent_grid_broker_up 1.0" in metrics, metrics
        assert 'agent_grid_queue_messages{queue="nudges",state="visible"} 0.0' in metrics, metrics
        assert 'agent_grid_dead_letter_messages{queue="lifecycle"} 0.0' in metrics, metrics

        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so "killed by SIGTERM" is a clean exit too.
        assert process.wait(timeout=25) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "service.log").read_text()
    assert '"level": "error"' not in output, output
    expected_last_words = "Application shutdown complete" if prefix != "EXECUTION_GRID_" else "consumer_stopped"
    assert expected_last_words in output, output
    if prefix != "ISSUE_TRACKER_":
        assert "consumer_stopped" in output, output

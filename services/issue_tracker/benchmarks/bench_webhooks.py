"""Webhook intake benchmark behind ``make bench-webhooks``.

In one run, on one embedded broker: the broker's own ceilings for single and batched sends (aiobotocore,
sequential), then signed webhook deliveries through the real issue-tracker process (its console entry point,
uvicorn, the SQLite delivery store, the real queue) driven by ``wrk`` on loopback. Every request carries its
own ``X-GitHub-Delivery``, so every one is a new delivery that must be enqueued before its 202.

Prints a table and exits 0; targets (≥ 1,000 req/s, p99 < 50 ms) are informational.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_transport import OutgoingMessage, open_sqs_transport
from issue_tracker.webhooks.public_testing import signed_headers

_REPO_ROOT = Path(__file__).resolve().parents[3]
_SECRET = b"bench-secret"
_PAYLOAD = {
    "action": "opened",
    "issue": {"number": 42, "node_id": "I_bench", "user": {"login": "alice"}, "author_association": "MEMBER"},
    "repository": {"full_name": "octo/widgets"},
    "sender": {"login": "alice", "type": "User"},
}
_TARGET_RPS = 1000.0
_TARGET_P99_MS = 50.0
_LUA = """
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  thread_id = id
end
wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "issues"
wrk.headers["X-Hub-Signature-256"] = SIGNATURE
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = RUN .. "-" .. thread_id .. "-" .. counter
  return wrk.format()
end
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of load (default 15)")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[16, 32],
        help="concurrent connections, one load per comma-separated value (default 16,32)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leave a core to the server)")
    parser.add_argument("--endpoint", help="use this SQS endpoint instead of starting the embedded broker")
    return parser.parse_args()


async def broker_ceilings(endpoint: str, prefix: str) -> tuple[float, float]:
    """Sequential single sends and sequential 10-message batches, msg/s."""
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs:
        url = (await resolve_queues(sqs, QueueSettings(prefix=prefix))).launches.url
        body = json.dumps(_PAYLOAD)
        started = time.perf_counter()
        for index in range(300):
            await sqs.send_batch(url, [OutgoingMessage(entry_id=str(index), body=body)])
        single = 300 / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(300):
            await sqs.send_batch(url, [OutgoingMessage(entry_id=str(i), body=body) for i in range(10)])
        batched = 3000 / (time.perf_counter() - started)
    return single, batched


async def nudges_waiting(endpoint: str, prefix: str) -> int:
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs:
        url = (await resolve_queues(sqs, QueueSettings(prefix=prefix))).nudges.url
        depth = await sqs.depth(url)
        return depth.visible + depth.in_flight + depth.delayed


def start_issue_tracker(endpoint: str, prefix: str, port: int, state: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ISSUE_TRACKER_AWS__ENDPOINT_URL": endpoint,
        "ISSUE_TRACKER_QUEUES__PREFIX": prefix,
        "ISSUE_TRACKER_HTTP__PORT": str(port),
        "ISSUE_TRACKER_WEBHOOK__SECRET": _SECRET.decode(),
        "ISSUE_TRACKER_WEBHOOK__DELIVERIES_URL": f"sqlite:///{state / 'deliveries.sqlite3'}",
        # One line per request would measure the terminal; warnings still show.
        "ISSUE_TRACKER_LOG__LEVEL": "WARNING",
    }
    executable = Path(sys.executable).parent / "agent-grid-issue-tracker"
    process = subprocess.Popen([str(executable)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the issue-tracker did not become healthy")


def run_wrk(url: str, *, duration: int, connections: int, threads: int, run_id: str) -> dict[str, float]:
    body = json.dumps(_PAYLOAD).encode()
    signature = signed_headers(_SECRET, body, event="issues")["x-hub-signature-256"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"BODY = {json.dumps(body.decode())}\nSIGNATURE = {json.dumps(signature)}\n")
        script.write(f"RUN = {json.dumps(run_id)}\n{_LUA}")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name, url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, float]:
    def milliseconds(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])}  # type: ignore[index]
    figures["requests"] = float(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non_2xx"] = float(non_2xx[1]) if non_2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    figures["socket_errors"] = float(sum(int(part) for part in errors.groups())) if errors else 0.0
    for percentile in ("50", "90", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        figures[f"p{percentile}"] = milliseconds(match[1], match[2]) if match else float("nan")
    return figures


def main() -> None:
    args = parse_args()
    configure_logging("WARNING", "console")
    broker = None
    endpoint = args.endpoint
    if not endpoint:
        broker = EmbeddedBroker.in_repo(_REPO_ROOT, port=find_free_port(), name="bench-webhooks")
        print(f"starting the embedded broker on {broker.endpoint_url} …", flush=True)
        broker.start()
        endpoint = broker.endpoint_url
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    port = find_free_port()
    tracker = None
    loads: list[dict[str, float]] = []
    try:
        single, batched = asyncio.run(broker_ceilings(endpoint, prefix))
        with tempfile.TemporaryDirectory() as state:
            tracker = start_issue_tracker(endpoint, prefix, port, Path(state))
            url = f"http://127.0.0.1:{port}/webhooks/github"
            print("warming up …", flush=True)
            run_wrk(url, duration=3, connections=args.connections[0], threads=args.threads, run_id="warmup")
            for connections in args.connections:
                before = asyncio.run(nudges_waiting(endpoint, prefix))
                print(f"{args.duration}s of load, {connections} connections …", flush=True)
                load = run_wrk(
                    url, duration=args.duration, connections=connections, threads=args.threads, run_id=uuid.uuid4().hex
                )
                load["connections"] = connections
                load["enqueued"] = asyncio.run(nudges_waiting(endpoint, prefix)) - before
                loads.append(load)
    finally:
        if tracker is not None:
            tracker.send_signal(signal.SIGTERM)
            tracker.wait(timeout=30)
        if broker is not None:
            broker.stop()
    report(loads, single, batched, args)


def report(loads: list[dict[str, float]], single: float, batched: float, args: argparse.Namespace) -> None:
    def status(load: dict[str, float]) -> str:
        met = load["rps"] >= _TARGET_RPS and load["p99"] < _TARGET_P99_MS
        return "met" if met else "not met"

    print()
    print(
        f"load: wrk, {args.threads} thread(s), {args.duration}s per row, loopback; "
        "each request a new signed issues.opened delivery"
    )
    print("target: ≥ 1,000 req/s with p99 < 50 ms")
    header = f"{'connections':>11} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
    print(header + f"{'errors':>7} {'enqueued':>9} {'/batched':>9} {'/single':>8}  target")
    print("-" * (len(header) + 46))
    for load in loads:
        print(
            f"{load['connections']:>11.0f} {load['rps']:>8.0f} {load['p50']:>8.1f} {load['p90']:>8.1f} "
            f"{load['p99']:>8.1f} {load['non_2xx']:>8.0f} {load['socket_errors']:>7.0f} {load['enqueued']:>9.0f} "
            f"{load['rps'] / batched:>9.2f} {load['rps'] / single:>8.2f}  {status(load)}"
        )
    print(f"\nbroker ceilings, same run: single sends {single:.0f} msg/s, batched sends (10/call) {batched:.0f} msg/s")
    print("enqueued = nudges that reached the queue during the row (requests + the in-flight tail at the end)")
    print("targets are informational; the benchmark always exits 0")


if __name__ == "__main__":
    main()

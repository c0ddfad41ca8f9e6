"""Execution-grid benchmark behind ``make bench-grid``; prints a table and always exits 0.

The worker runs as its own process (``python -m execution_grid``, configured only through ``EXECUTION_GRID_*``
variables, on the embedded broker), so that its CPU time can be read alone from ``/proc/<pid>/stat``. Its
agents are the repository's scripted agent (``agent-grid-scripted-agent``) as the ``generic`` kind, each launch
carrying the agent's script in ``prompt_inputs``. This process plays the coordinator: it publishes the launches
and cancels, and consumes the lifecycle queue.

1. Launch → spawn latency with the worker's launch consumer already long-polling: ``--latency-samples``
   short-lived launches, published one at a time (the next one ``--spacing-ms`` after the previous one's
   ``AgentStarted`` arrived, with slots to spare), each carrying its publish time (``time.time()``). The scripted
   agent's ``record_to`` start record says when its process ran; ``AgentStarted.started_at`` when the worker
   spawned it; and this process notes when ``AgentStarted`` reached it through the lifecycle queue.
2. Concurrency: ``--agents`` long-running scripted agents (progress and usage every 5 s, heartbeats every
   15 s) launched at once; the ramp until all have started, then the worker's CPU share over a
   ``--window-s`` steady state (target: ≥ 200 agents with the worker under 10 % of one core), the agents'
   memory, and after cancelling them all, exactly one ``AgentExited`` per run.

``--profile-worker PATH`` runs the worker under cProfile, enabled for the steady-state window only, and writes
the stats to PATH (``python -m pstats PATH``); its CPU figures then include the profiler's overhead.
"""

import argparse
import asyncio
import collections
import functools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunMode
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import QueueUrls, control_queue_name, resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Consumer, Handlers, MessageContext, Publisher
from agent_grid_runtime.public_transport import open_sqs_transport

_REPO_ROOT = Path(__file__).resolve().parents[3]
_TARGET_AGENTS = 200
_TARGET_CPU_SHARE = 0.10
_HEARTBEAT_INTERVAL_S = 15.0
_PROGRESS_EVERY_S = 5.0
_CANCEL_GRACE_S = 5.0
_USAGE = {
    "input_tokens": 240_000,
    "output_tokens": 12_000,
    "cache_read_tokens": 180_000,
    "cache_write_tokens": 20_000,
    "cost_usd": 1.25,
    "turns": 40,
}
# The worker with a profiler that SIGUSR2 switches on and, the second time, off (writing the stats to argv[1]).
_PROFILED_WORKER = """
import cProfile, signal, sys
from execution_grid.__main__ import main
profile, state = cProfile.Profile(), {"on": False}
def toggle(signum, frame):
    if state["on"]:
        profile.disable()
        profile.dump_stats(sys.argv[1])
    else:
        profile.enable()
    state["on"] = not state["on"]
signal.signal(signal.SIGUSR2, toggle)
main()
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=200, help="concurrent long-running agents (default 200)")
    parser.add_argument("--latency-samples", type=int, default=100, help="launches timed one at a time (default 100)")
    parser.add_argument("--spacing-ms", type=float, default=75.0, help="pause between timed launches (default 75)")
    parser.add_argument("--window-s", type=float, default=30.0, help="steady-state CPU window (default 30)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="pause after the ramp, before the window")
    parser.add_argument("--ramp-timeout-s", type=float, default=120.0, help="give up waiting for all to start")
    parser.add_argument("--worker-log-level", default="INFO", help="the worker's log level (default INFO)")
    parser.add_argument("--profile-worker", type=Path, help="cProfile the worker over the window; stats to PATH")
    parser.add_argument("--endpoint", help="use this SQS endpoint instead of starting the embedded broker")
    args = parser.parse_args()
    if args.agents < 1 or args.latency_samples < 2 or args.window_s <= 0:
        parser.error("--agents must be ≥ 1, --latency-samples ≥ 2 and --window-s > 0")
    return args


# -- processes ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS shares each shared page out among the processes that map it."""
    found = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name in found:
                found[name] = int(rest.split()[0])
    except OSError:
        pass
    return found["Rss:"], found["Pss:"]


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def scripted_agent() -> str:
    path = Path(sys.executable).parent / "agent-grid-scripted-agent"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make install` (uv sync installs the scripted agent)")
    return str(path)


@dataclass
class Worker:
    """The worker process and how to reach it."""

    process: "subprocess.Popen[bytes]"
    worker_id: str
    api_url: str
    token: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.api_url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def start_worker(
    endpoint: str, prefix: str, state: Path, *, slots: int, log_level: str, profile: Path | None
) -> Worker:
    """``python -m execution_grid`` configured through its environment only, as a deployment would."""
    port = find_free_port()
    worker_id = f"bench-grid-{uuid.uuid4().hex[:8]}"
    token = secrets.token_urlsafe(16)
    env = {name: value for name, value in os.environ.items() if not name.startswith("EXECUTION_GRID_")}
    env |= {
        "EXECUTION_GRID_AWS__ENDPOINT_URL": endpoint,
        "EXECUTION_GRID_QUEUES__PREFIX": prefix,
        "EXECUTION_GRID_WORKER_ID": worker_id,
        "EXECUTION_GRID_SLOTS": str(slots),
        "EXECUTION_GRID_STATE_DIR": str(state / "worker"),
        "EXECUTION_GRID_HTTP__PORT": str(port),
        "EXECUTION_GRID_API_TOKEN": token,
        "EXECUTION_GRID_AGENTS__GENERIC__EXECUTABLE": scripted_agent(),
        # No clone: a None base URL gives every run an empty directory. An empty variable would be ignored
        # (env_ignore_empty), so the section goes as JSON.
        "EXECUTION_GRID_WORKSPACE": json.dumps({"clone_base_url": None, "keep": "never"}),
        "EXECUTION_GRID_SUPERVISION__HEARTBEAT_INTERVAL_S": str(_HEARTBEAT_INTERVAL_S),
        "EXECUTION_GRID_LOG__LEVEL": log_level,
        "EXECUTION_GRID_LOG__FORMAT": "json",
    }
    if profile is None:
        argv = [sys.executable, "-m", "execution_grid"]
    else:
        argv = [sys.executable, "-c", _PROFILED_WORKER, str(profile.resolve())]
    log_path = state / "worker.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, env=env, cwd=state, stdout=log, stderr=subprocess.STDOUT)
    return Worker(process, worker_id, f"http://127.0.0.1:{port}", token, log_path)


async def wait_healthy(worker: Worker, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(worker.healthy):
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.process.returncode}; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker was not healthy after {timeout_s:.0f}s; see {worker.log_path}")
        await asyncio.sleep(0.2)


def stop_worker(worker: Worker, timeout_s: float = 60.0) -> int:
    """SIGTERM (drain, wind the agents down), then SIGKILL if it takes too long; returns its exit code."""
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    return worker.process.returncode


# -- the coordinator's side ---------------------------------------------------------------------------------


@dataclass
class Lifecycle:
    """What the lifecycle queue delivered, per run, with the wall-clock time this process handled it."""

    started: dict[str, tuple[float, AgentStarted]] = field(default_factory=dict)
    exits: dict[str, list[AgentExited]] = field(default_factory=lambda: collections.defaultdict(list))
    heartbeats: int = 0
    duplicate_starts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_started(self, envelope: Envelope[AgentStarted], _context: MessageContext) -> None:
        if envelope.body.run_id in self.started:
            self.duplicate_starts += 1
        else:
            self.started[envelope.body.run_id] = (time.time(), envelope.body)
        self.changed.set()

    async def on_heartbeat(self, _envelope: Envelope[AgentHeartbeat], _context: MessageContext) -> None:
        self.heartbeats += 1

    async def on_exited(self, envelope: Envelope[AgentExited], _context: MessageContext) -> None:
        self.exits[envelope.body.run_id].append(envelope.body)
        self.changed.set()

    def handlers(self) -> Handlers:
        return (
            Handlers()
            .on(AgentStarted, self.on_started)
            .on(AgentHeartbeat, self.on_heartbeat)
            .on(AgentExited, self.on_exited)
        )

    async def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not condition():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s") from None

    def all_started(self, run_ids: Iterable[str]) -> bool:
        return all(run_id in self.started for run_id in run_ids)

    def all_exited(self, run_ids: Iterable[str]) -> bool:
        return all(self.exits.get(run_id) for run_id in run_ids)


def launch(run_id: str, number: int, script: dict[str, Any], published_at: float) -> Envelope[LaunchAgent]:
    body = LaunchAgent(
        run_id=run_id,
        issue=IssueRef(repo="bench/grid", number=number),
        mode=RunMode.WORK,
        agent_kind="generic",
        prompt_inputs={"script": json.dumps(script), "published_at": repr(published_at)},
    )
    return wrap(body, producer="bench-grid")


def start_records(path: Path) -> dict[str, dict[str, Any]]:
    """The scripted agents' start records (``record_to``), by run id."""
    if not path.exists():
        return {}
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("event") == "start":
                found[record["run_id"]] = record
    return found


# -- phase 1: latency ---------------------------------------------------------------------------------------


@dataclass
class Latency:
    spawned_ms: list[float] = field(default_factory=list)
    """publish → the worker spawned the process (AgentStarted.started_at)."""
    running_ms: list[float] = field(default_factory=list)
    """publish → the agent's start record (its interpreter up, its prompt read)."""
    announced_ms: list[float] = field(default_factory=list)
    """publish → AgentStarted handled here, through the lifecycle queue."""
    run_ids: list[str] = field(default_factory=list)


async def measure_latency(
    publisher: Publisher, lifecycle: Lifecycle, args: argparse.Namespace, records: Path
) -> Latency:
    script = {"sleep_s": 0.2, "progress_every_s": 0, "record_to": str(records)}
    sent: dict[str, float] = {}
    for number in range(1, args.latency_samples + 1):
        run_id = f"lat-{number}-{uuid.uuid4().hex[:8]}"
        published_at = time.time()
        await publisher.publish(launch(run_id, number, script, published_at))
        sent[run_id] = published_at
        await lifecycle.until(functools.partial(lifecycle.all_started, [run_id]), 30, f"AgentStarted of {run_id}")
        await asyncio.sleep(args.spacing_ms / 1000)
    await lifecycle.until(lambda: lifecycle.all_exited(sent), 60, "the timed runs' exits")
    started = start_records(records)
    result = Latency(run_ids=list(sent))
    for run_id, published_at in sent.items():
        received_at, announced = lifecycle.started[run_id]
        result.spawned_ms.append((announced.started_at.timestamp() - published_at) * 1000)
        result.running_ms.append((started[run_id]["t"] - published_at) * 1000)
        result.announced_ms.append((received_at - published_at) * 1000)
    return result


# -- phase 2: concurrency -----------------------------------------------------------------------------------


@dataclass
class Concurrency:
    agents: int = 0
    started: int = 0
    api_running: int = 0
    ramp_announced_s: float = 0.0
    ramp_running_s: float = 0.0
    ramp_worker_cpu_s: float = 0.0
    window_s: float = 0.0
    worker_cpu_s: float = 0.0
    agents_cpu_s: float = 0.0
    broker_cpu_s: float | None = None
    bench_cpu_s: float = 0.0
    alive_after_window: int = 0
    exits_during_window: int = 0
    heartbeats_in_window: int = 0
    worker_rss_kib: int = 0
    agents_rss_kib: int = 0
    agents_pss_kib: int = 0
    cancel_s: float = 0.0
    run_ids: list[str] = field(default_factory=list)

    @property
    def worker_share(self) -> float:
        return self.worker_cpu_s / self.window_s if self.window_s else float("nan")


async def measure_concurrency(
    publisher: Publisher,
    control: Publisher,
    lifecycle: Lifecycle,
    worker: Worker,
    broker_pid: int | None,
    args: argparse.Namespace,
    records: Path,
) -> Concurrency:
    # Long enough to outlast the ramp and the window; they are cancelled before they finish.
    sleep_s = args.ramp_timeout_s + args.settle_s + args.window_s + 120
    script = {"sleep_s": sleep_s, "progress_every_s": _PROGRESS_EVERY_S, "usage": _USAGE, "record_to": str(records)}
    result = Concurrency(agents=args.agents)
    run_ids = [f"conc-{number}-{uuid.uuid4().hex[:8]}" for number in range(1, args.agents + 1)]
    result.run_ids = run_ids
    ramp_cpu = cpu_seconds(worker.pid)
    published_at = time.time()
    envelopes = [launch(run_id, number, script, published_at) for number, run_id in enumerate(run_ids, start=1)]
    await publisher.publish_many(envelopes)
    print(f"  {args.agents} launches published; waiting for every agent to start …", flush=True)
    await lifecycle.until(lambda: lifecycle.all_started(run_ids), args.ramp_timeout_s, "all agents started")
    result.ramp_worker_cpu_s = cpu_seconds(worker.pid) - ramp_cpu
    result.started = sum(run_id in lifecycle.started for run_id in run_ids)
    result.ramp_announced_s = max(lifecycle.started[run_id][0] for run_id in run_ids) - published_at
    await asyncio.sleep(1)  # the last start records are written just after AgentStarted can arrive
    started = start_records(records)
    result.ramp_running_s = max(started[run_id]["t"] for run_id in run_ids if run_id in started) - published_at
    pids = [started[run_id]["pid"] for run_id in run_ids if run_id in started]
    runs = await asyncio.to_thread(worker.get, "/runs")
    result.api_running = sum(run["run_id"] in set(run_ids) and run["state"] == "running" for run in runs["running"])

    print(f"  all started in {result.ramp_announced_s:.1f}s; settling {args.settle_s:g}s …", flush=True)
    await asyncio.sleep(args.settle_s)
    print(f"  measuring the worker's CPU over {args.window_s:g}s …", flush=True)
    if args.profile_worker is not None:
        worker.process.send_signal(signal.SIGUSR2)
    exits_before, heartbeats_before = sum(len(e) for e in lifecycle.exits.values()), lifecycle.heartbeats
    worker_cpu, agents_cpu = cpu_seconds(worker.pid), sum(cpu_seconds(pid) for pid in pids)
    broker_cpu = cpu_seconds(broker_pid) if broker_pid else 0.0
    bench_cpu, window_started = time.process_time(), time.monotonic()
    await asyncio.sleep(args.window_s)
    result.window_s = time.monotonic() - window_started
    result.worker_cpu_s = cpu_seconds(worker.pid) - worker_cpu
    result.agents_cpu_s = sum(cpu_seconds(pid) for pid in pids) - agents_cpu
    result.broker_cpu_s = cpu_seconds(broker_pid) - broker_cpu if broker_pid else None
    result.bench_cpu_s = time.process_time() - bench_cpu
    if args.profile_worker is not None:
        worker.process.send_signal(signal.SIGUSR2)
    result.exits_during_window = sum(len(e) for e in lifecycle.exits.values()) - exits_before
    result.heartbeats_in_window = lifecycle.heartbeats - heartbeats_before
    result.alive_after_window = sum(running(pid) for pid in pids)
    result.worker_rss_kib = memory_kib(worker.pid)[0]
    memory = [memory_kib(pid) for pid in pids]
    result.agents_rss_kib = sum(rss for rss, _ in memory)
    result.agents_pss_kib = sum(pss for _, pss in memory)

    print(f"  cancelling the {args.agents} runs …", flush=True)
    cancelled_at = time.monotonic()
    await control.publish_many(
        [
            wrap(CancelRun(run_id=run_id, reason="bench-grid done", grace_s=_CANCEL_GRACE_S), producer="bench-grid")
            for run_id in run_ids
        ]
    )
    await lifecycle.until(lambda: lifecycle.all_exited(run_ids), 90, "every cancelled run's exit")
    result.cancel_s = time.monotonic() - cancelled_at
    return result


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class Results:
    latency: Latency
    concurrency: Concurrency
    lifecycle: Lifecycle
    worker_exit_code: int


async def run(endpoint: str, broker_pid: int | None, args: argparse.Namespace, state: Path) -> Results:
    prefix = f"bg{uuid.uuid4().hex[:8]}"
    queue_settings = QueueSettings(prefix=prefix)
    lifecycle = Lifecycle()
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as transport:
        queues: QueueUrls = await resolve_queues(transport, queue_settings)
        watcher = Consumer(
            transport,
            queue_url=queues.lifecycle.url,
            dead_letter_url=queues.lifecycle.dead_letter_url,
            handlers=lifecycle.handlers(),
            settings=ConsumerSettings(max_in_flight=50, wait_time_s=20, visibility_timeout_s=60),
            queue_label="lifecycle",
        )
        watching = asyncio.create_task(watcher.run())
        slots = min(1000, max(250, args.agents))
        worker = start_worker(
            endpoint,
            prefix,
            state,
            slots=slots,
            log_level=args.worker_log_level,
            profile=args.profile_worker,
        )
        try:
            print(f"worker pid {worker.pid} ({slots} slots); waiting for it to be healthy …", flush=True)
            await wait_healthy(worker)
            await asyncio.sleep(1.0)  # its launch consumer's first long poll reaches the broker
            launches = Publisher(transport=transport, queue_url=queues.launches.url, queue_label="launches")
            control_url = await transport.queue_url(control_queue_name(queue_settings, worker.worker_id))
            control = Publisher(transport=transport, queue_url=control_url, queue_label="control")
            print(f"phase 1: {args.latency_samples} launches one at a time …", flush=True)
            latency = await measure_latency(launches, lifecycle, args, state / "latency-records.jsonl")
            print(f"phase 2: {args.agents} concurrent agents …", flush=True)
            concurrency = await measure_concurrency(
                launches, control, lifecycle, worker, broker_pid, args, state / "concurrency-records.jsonl"
            )
        finally:
            exit_code = await asyncio.to_thread(stop_worker, worker)
        await asyncio.sleep(2)  # anything the worker still sent (a duplicate exit would show here)
        watcher.stop()
        await watching
    return Results(latency, concurrency, lifecycle, exit_code)


# -- the table ----------------------------------------------------------------------------------------------


def _status(met: bool) -> str:
    return "met" if met else "NOT MET"


def _quantiles(values: Sequence[float]) -> tuple[float, float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98], max(values)


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_table(results: Results, args: argparse.Namespace, endpoint: str) -> None:
    latency, concurrency, lifecycle = results.latency, results.concurrency, results.lifecycle
    cores = os.cpu_count() or 1
    print()
    print(f"broker: {endpoint}; {cores} CPUs; worker: python -m execution_grid in its own process, runner subprocess")
    print()
    header = f"{'launch → agent latency (ms), ' + str(len(latency.run_ids)) + ' launches one at a time':<58}"
    header += f"{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    print(header)
    print("-" * len(header))
    rows = [
        ("publish → worker spawned it (AgentStarted.started_at)", latency.spawned_ms),
        ("publish → agent process running (its start record)", latency.running_ms),
        ("publish → AgentStarted received from the lifecycle queue", latency.announced_ms),
    ]
    for label, values in rows:
        p50, p90, p99, top = _quantiles(values)
        print(f"{label:<58}{p50:>8.1f}{p90:>8.1f}{p99:>8.1f}{top:>8.1f}")
    print(f"(launch consumer long-polling, {args.spacing_ms:g} ms between a start and the next publish)")
    print()

    share = concurrency.worker_share
    print(f"one worker, {concurrency.agents} concurrent scripted agents")
    print("-" * 90)

    def row(label: str, value: str) -> None:
        print(f"{label:<58}{value}")

    row("agents started (AgentStarted received / GET /runs)", f"{concurrency.started} / {concurrency.api_running}")
    row("ramp: publish → last AgentStarted received", f"{concurrency.ramp_announced_s:.1f} s")
    row("ramp: publish → last agent process running", f"{concurrency.ramp_running_s:.1f} s")
    per_launch_ms = concurrency.ramp_worker_cpu_s / max(1, concurrency.agents) * 1000
    row("  worker CPU during the ramp, per launch", f"{per_launch_ms:.1f} ms")
    row("agents still running at the end of the window", f"{concurrency.alive_after_window}")
    row(f"worker CPU over {concurrency.window_s:.0f} s of steady state", f"{share:.1%} of one core")
    row("  agents' CPU meanwhile (all of them)", f"{concurrency.agents_cpu_s / concurrency.window_s:.1%} of one core")
    if concurrency.broker_cpu_s is not None:
        row("  broker CPU meanwhile", f"{concurrency.broker_cpu_s / concurrency.window_s:.1%} of one core")
    row("  this process (the lifecycle consumer)", f"{concurrency.bench_cpu_s / concurrency.window_s:.1%} of one core")
    expected_beats = concurrency.agents * concurrency.window_s / _HEARTBEAT_INTERVAL_S
    row("heartbeats received in the window", f"{concurrency.heartbeats_in_window} (≈ {expected_beats:.0f} expected)")
    row("exits during the window", f"{concurrency.exits_during_window}")
    row("worker RSS", _mib(concurrency.worker_rss_kib))
    per_agent = concurrency.agents_rss_kib / max(1, concurrency.agents) / 1024
    row("agents' RSS, total (per agent)", f"{_mib(concurrency.agents_rss_kib)} ({per_agent:.1f} MiB)")
    row("agents' PSS, total (shared pages split)", _mib(concurrency.agents_pss_kib))
    row("cancel → every run's AgentExited", f"{concurrency.cancel_s:.1f} s")
    all_runs = latency.run_ids + concurrency.run_ids
    exactly_one = sum(len(lifecycle.exits.get(run_id, [])) == 1 for run_id in all_runs)
    reasons = collections.Counter(exit.reason.value for run_id in all_runs for exit in lifecycle.exits.get(run_id, []))
    row(
        "runs with exactly one AgentExited",
        f"{exactly_one} / {len(all_runs)}  ({_status(exactly_one == len(all_runs))})",
    )
    row("  exit reasons", ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())))
    row("  duplicate AgentStarted", f"{lifecycle.duplicate_starts}")
    row("worker exit code after SIGTERM", f"{results.worker_exit_code}")
    print()
    met = concurrency.started >= _TARGET_AGENTS and share < _TARGET_CPU_SHARE
    print(
        f"target: ≥ {_TARGET_AGENTS} agents on one worker with its CPU < {_TARGET_CPU_SHARE:.0%} of one core: "
        f"{_status(met)} ({concurrency.started} agents, {share:.1%})"
    )
    if args.profile_worker is not None:
        print(f"the worker ran under cProfile over the window (CPU figures include it): {args.profile_worker}")
    print("targets are informational; the benchmark always exits 0")


async def main() -> None:
    args = parse_args()
    configure_logging("WARNING", "console")
    broker: EmbeddedBroker | None = None
    endpoint: str = args.endpoint
    if not endpoint:
        broker = EmbeddedBroker.in_repo(_REPO_ROOT, port=find_free_port(), name="bench-grid")
        endpoint = broker.endpoint_url
    try:
        broker_pid: int | None = None
        if broker is not None:
            print(f"starting the embedded broker on {endpoint} …", flush=True)
            await asyncio.to_thread(broker.start)
            broker_pid = int(broker.pid_path.read_text())
        with tempfile.TemporaryDirectory(prefix="bench-grid-") as state:
            results = await run(endpoint, broker_pid, args, Path(state))
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    print_table(results, args, endpoint)


if __name__ == "__main__":
    asyncio.run(main())

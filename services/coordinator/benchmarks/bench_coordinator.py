"""Coordinator benchmark behind ``make bench-coordinator``; prints tables and always exits 0.

1. Decision cost against history: one decision as the coordinator makes it (``Ledger.decide``: the facts read,
   the pure decision, the lease and the outbox's writes, one transaction), timed on a SQLite ledger holding 10^2
   and then 10^6 finished runs (target: flat).
2. End to end on the embedded broker: nudges for opted-in issues on the GitHub test server (its own process),
   decided and launched by the real coordinator (a GraphQL read of the issue, the ledger's transaction, the
   launch published; GitHub writes queued in the outbox and written at GitHub's pace, 1 s apart), against the
   raw broker doing the same message work in the same run: the same nudge envelopes published the same way,
   relayed by the same number of receive pollers and in-flight messages (receive, send a launch-sized message,
   delete), timed the same way (until every launch is on the queue). Rounds alternate; the ratio is the median
   of the rounds' ratios (target: >= 0.5).
3. The same end to end with GitHub writes unpaced, so the outbox's writer drains while launches are decided:
   what writing costs when nothing paces it, and how long until every status comment is on GitHub.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from agent_grid_contracts.public_codec import encode
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_launches import LaunchAgent, RunLimits, RunMode
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import OutgoingMessage, QueueTransport, open_sqs_transport
from coordinator.decisions.public_decide import decide_launch
from coordinator.decisions.public_facts import IssueFacts, LedgerFacts, Trigger
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.decisions.public_verdicts import Launch, Verdict
from coordinator.ledger.public_ledger import Changes, FactsScope, LaunchLimits, NewRun, open_ledger
from coordinator.ledger.public_outbox import OutboxEntry
from coordinator.ledger.schema import issues, repo_days, runs, trees

type Planned = tuple[Verdict, Changes]

_REPO_ROOT = Path(__file__).resolve().parents[3]
_IN_FLIGHT = 20  # the coordinator's nudge consumer, and the raw relay alike
_API_TOKEN = "bench-api-token"
_POLLERS = 2  # the consumer's receive pollers at that many in flight: ceil(20 / 10)
_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_ISSUES = 10_000
_TREES = 1_000
_OPEN = Policy(
    caps=Caps(
        max_active_runs=1_000_000,
        max_active_runs_per_repo=1_000_000,
        max_active_runs_per_tree=1_000_000,
        max_runs_per_issue=1_000_000,
        max_runs_per_tree=1_000_000,
        max_cost_usd_per_tree=1e9,
        max_tokens_per_tree=10**15,
        max_cost_usd_per_repo_per_day=1e9,
    )
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs=2, default=[100, 1_000_000], help="small and large history")
    parser.add_argument("--samples", type=int, default=500, help="decisions timed per history size")
    parser.add_argument("--nudges", type=int, default=1000, help="nudges decided end to end per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of raw broker and coordinator, alternating")
    return parser.parse_args()


async def fill(url: str, history: int) -> None:
    """``history`` finished runs over 10,000 issues in 1,000 trees, and their running totals."""
    async with open_ledger(url) as ledger:
        engine = ledger._engine  # the benchmark writes in bulk, below the ledger's one-run-at-a-time API
        batch = 20_000
        async with engine.begin() as connection:
            for start in range(0, history, batch):
                rows = [
                    {
                        "run_id": f"old-{n}",
                        "issue_key": f"github:octo/widgets#{n % _ISSUES + 1}",
                        "repo": "octo/widgets",
                        "root_key": f"github:octo/widgets#{n % _TREES + 1}",
                        "mode": "work",
                        "agent_kind": "claude_code",
                        "state": "exited",
                        "authorised_by": "alice",
                        "attempt": 1,
                        "created_at": _NOW - timedelta(minutes=n),
                        "last_seen_at": _NOW - timedelta(minutes=n),
                        "ended_at": _NOW - timedelta(minutes=n),
                        "exit_reason": "success",
                        "cost_usd": 0.01,
                        "tokens": 100,
                    }
                    for n in range(start, min(start + batch, history))
                ]
                await connection.execute(runs.insert(), rows)
            per_issue = max(1, history // _ISSUES)
            await connection.execute(
                issues.insert(),
                [
                    {"issue_key": f"github:octo/widgets#{n}", "runs": per_issue, "consecutive_failures": 0}
                    for n in range(1, _ISSUES + 1)
                ],
            )
            await connection.execute(
                trees.insert(),
                [
                    {
                        "root_key": f"github:octo/widgets#{n}",
                        "authorised_by": "alice",
                        "runs": history // _TREES,
                        "cost_usd": 0.0,
                        "tokens": 0,
                        "killed": False,
                    }
                    for n in range(1, _TREES + 1)
                ],
            )
            await connection.execute(
                repo_days.insert(), [{"repo": "octo/widgets", "day": _NOW.date(), "cost_usd": 1.0}]
            )
            count = await connection.scalar(sa.select(sa.func.count()).select_from(runs))
            assert count == history


async def time_decisions(url: str, samples: int) -> list[float]:
    trigger = Trigger(NudgeReason.ISSUE_LABELED, Actor(login="alice", association=AuthorAssociation.MEMBER))
    timings: list[float] = []
    limits = LaunchLimits(
        max_active_runs=10**6,
        max_active_runs_per_repo=10**6,
        max_active_runs_per_tree=10**6,
        max_active_runs_of_kind=None,
        max_runs_per_issue=10**6,
        max_runs_per_tree=10**6,
    )
    async with open_ledger(url) as ledger:
        for n in range(samples):
            number = random.randint(1, _ISSUES)
            ref = IssueRef(repo="octo/widgets", number=number)
            root = IssueRef(repo="octo/widgets", number=number % _TREES + 1)
            facts = IssueFacts(
                ref=ref, open=True, labels=frozenset({"agent-grid"}), assignees=(), root=root, root_labels=frozenset()
            )
            scope = FactsScope(
                issue_key=ref.key, repo=ref.repo, root_key=root.key, agent_kind="claude_code", today=_NOW.date()
            )

            plan = launch_plan(facts, trigger, f"bench-{n}")
            started = time.perf_counter()
            await ledger.decide(scope, plan, now=_NOW, limits=limits)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def launch_plan(facts: IssueFacts, trigger: Trigger, run_id: str) -> Callable[[LedgerFacts], Planned]:
    """The coordinator's plan for one decision: the pure verdict, and a launch's run and outbox rows."""

    def plan(ledger_facts: LedgerFacts) -> Planned:
        verdict = decide_launch(facts, ledger_facts, trigger, _OPEN, _NOW)
        if not isinstance(verdict, Launch):
            return verdict, Changes()
        ref, root = facts.ref, facts.root
        run = NewRun(run_id, ref.key, ref.repo, root.key, "work", "claude_code", "alice", None)
        writes = (OutboxEntry(ref.key, "status", "running"), OutboxEntry(root.key, "tree", "roll-up"))
        return verdict, Changes(run=run, writes=writes)

    return plan


async def decision_cost(args: argparse.Namespace) -> list[tuple[int, float, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as state:
        for history in args.history:
            url = f"sqlite+aiosqlite:///{Path(state) / f'ledger-{history}.sqlite3'}"
            started = time.perf_counter()
            await fill(url, history)
            print(f"  ledger with {history:,} runs filled in {time.perf_counter() - started:.1f}s", flush=True)
            timings = sorted(await time_decisions(url, args.samples))
            rows.append(
                (history, statistics.median(timings), timings[int(len(timings) * 0.99) - 1], statistics.mean(timings))
            )
    return rows


def nudges_for(count: int) -> list[Envelope[Nudge]]:
    """The nudges both sides publish: alice labels each of ``count`` opted-in issues."""
    alice = Actor(login="alice", association=AuthorAssociation.MEMBER)
    return [
        wrap(
            Nudge(issue=IssueRef(repo="octo/widgets", number=n), reason=NudgeReason.ISSUE_LABELED, actor=alice),
            producer="bench",
        )
        for n in range(1, count + 1)
    ]


def launch_body(number: int) -> str:
    """A launch as the coordinator sends one (same fields, so the same size on the wire)."""
    ref = IssueRef(repo="octo/widgets", number=number)
    launch = LaunchAgent(
        run_id=f"run-{uuid.uuid4().hex[:20]}",
        issue=ref,
        root_issue=ref,
        mode=RunMode.PLAN,
        agent_kind="claude_code",
        limits=RunLimits(max_cost_usd=5.0, max_tokens=2_000_000),
        prompt_inputs={"authorised_by": "alice"},
    )
    return encode(wrap(launch, producer="coordinator"))


async def until_launched(sqs: QueueTransport, launches_url: str, count: int) -> None:
    """Poll the launch queue's depth until ``count`` launches are on it (both sides are timed this way)."""
    while True:
        depth = await sqs.depth(launches_url)
        if depth.visible + depth.in_flight >= count:
            return
        await asyncio.sleep(0.05)


async def raw_broker(endpoint: str, count: int) -> float:
    """Nudges/s through the bare broker: the same nudges published, relayed by as many pollers with as many
    messages in flight as the coordinator's consumer (receive, send a launch of the same size, delete)."""
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs:
        queues = await resolve_queues(sqs, QueueSettings(prefix=f"raw{uuid.uuid4().hex[:6]}"))
        launches = [launch_body(n) for n in range(1, count + 1)]
        in_flight = asyncio.Semaphore(_IN_FLIGHT)
        relayed = 0

        async def relay() -> None:
            nonlocal relayed
            while relayed < count:
                async with in_flight:
                    batch = await sqs.receive(
                        queues.nudges.url, max_messages=10, wait_time_s=1, visibility_timeout_s=60
                    )
                    if not batch:
                        continue
                    start, relayed = relayed, relayed + len(batch)
                    bodies = launches[start : start + len(batch)]
                    await sqs.send_batch(
                        queues.launches.url, [OutgoingMessage(entry_id=str(i), body=b) for i, b in enumerate(bodies)]
                    )
                    await sqs.delete_batch(queues.nudges.url, [message.receipt_handle for message in batch])

        started = time.perf_counter()
        await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many(nudges_for(count))
        async with asyncio.TaskGroup() as group:
            for _ in range(_POLLERS):
                group.create_task(relay())
            await until_launched(sqs, queues.launches.url, count)
        return count / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def github_stand_in(count: int, state: Path) -> Iterator[tuple[str, int]]:
    """The GitHub test server in its own process (as in ``make run``), seeded with ``count`` opted-in issues."""
    seed = {
        "users": [{"login": "alice"}, {"login": "agent-grid[bot]"}],
        "organizations": [{"login": "octo", "members": ["alice"]}],
        "repos": [{"owner": "octo", "name": "widgets"}],
        "tokens": [{"login": "agent-grid[bot]", "token": "bench-token", "rate_limit": 1_000_000}],
        "issues": [
            {"owner": "octo", "repo": "widgets", "title": f"Task {n}", "author": "alice", "labels": ["agent-grid"]}
            for n in range(count)
        ],
    }
    (state / "seed.json").write_text(json.dumps(seed))
    port = find_free_port()
    executable = Path(sys.executable).parent / "agent-grid-github-test-server"
    process = subprocess.Popen(
        [str(executable), "--port", str(port), "--seed", str(state / "seed.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_control/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def coordinator_process(
    endpoint: str, prefix: str, github_url: str, state: Path, *, paced: bool
) -> Iterator[tuple[str, int]]:
    """The real coordinator service (``agent-grid-coordinator``: uvicorn, its event loop, its settings from the
    environment) as its own process; yields its URL and pid once ``/healthz`` answers."""
    port = find_free_port()
    caps = {name.upper(): str(value) for name, value in _OPEN.caps.model_dump().items() if not isinstance(value, dict)}
    env = {
        **os.environ,
        "COORDINATOR_HTTP__PORT": str(port),
        "COORDINATOR_AWS__ENDPOINT_URL": endpoint,
        "COORDINATOR_QUEUES__PREFIX": prefix,
        "COORDINATOR_LEDGER_URL": f"sqlite+aiosqlite:///{state / 'ledger.sqlite3'}",
        "COORDINATOR_GITHUB__API_URL": github_url,
        "COORDINATOR_GITHUB__TOKEN": "bench-token",
        "COORDINATOR_NUDGE_CONSUMER__MAX_IN_FLIGHT": str(_IN_FLIGHT),
        "COORDINATOR_API__TOKEN": _API_TOKEN,
        "COORDINATOR_LOG__LEVEL": "WARNING",
        **{f"COORDINATOR_POLICY__CAPS__{name}": value for name, value in caps.items()},
    }
    if not paced:
        env |= {"COORDINATOR_GITHUB__WRITE_INTERVAL_S": "0", "COORDINATOR_GITHUB__WRITES_PER_MINUTE": "1000000"}
    executable = Path(sys.executable).parent / "agent-grid-coordinator"
    log = (state / "coordinator.log").open("wb")
    process = subprocess.Popen([str(executable)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no coordinator: {(state / 'coordinator.log').read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def end_to_end(endpoint: str, count: int, *, paced: bool = True) -> dict[str, float]:
    """Nudges/s decided and launched by the coordinator, with the CPU the coordinator and the GitHub stand-in used
    meanwhile; GitHub writes paced as against GitHub (1 s apart) or, ``paced=False``, not at all, and then also
    how long the outbox took to write every status comment after the last launch."""
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    with (
        tempfile.TemporaryDirectory() as state,
        github_stand_in(count, Path(state)) as (github_url, github_pid),
        coordinator_process(endpoint, prefix, github_url, Path(state), paced=paced) as (coordinator_url, own_pid),
    ):
        async with (
            open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs,
            httpx.AsyncClient(base_url=coordinator_url, headers={"Authorization": f"Bearer {_API_TOKEN}"}) as api,
        ):
            queues = await resolve_queues(sqs, QueueSettings(prefix=prefix))
            envelopes = nudges_for(count)
            started = time.perf_counter()
            github_cpu, own_cpu = cpu_seconds(github_pid), cpu_seconds(own_pid)
            await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many(envelopes)
            await until_launched(sqs, queues.launches.url, count)
            elapsed = time.perf_counter() - started
            figures = {
                "rate": count / elapsed,
                "github_cpu": (cpu_seconds(github_pid) - github_cpu) / elapsed,
                "own_cpu": (cpu_seconds(own_pid) - own_cpu) / elapsed,
                "writes_pending": (await api.get("/api/outbox")).json()["pending"],
            }
            if not paced:
                while True:
                    if not (await api.get("/api/outbox")).json()["pending"]:
                        break
                    await asyncio.sleep(0.05)
                figures["written_after_s"] = time.perf_counter() - started - elapsed
            return figures


async def main() -> None:
    args = parse_args()
    configure_logging("WARNING", "console")
    print("decision cost against history (SQLite ledger):", flush=True)
    cost = await decision_cost(args)
    broker = EmbeddedBroker.in_repo(_REPO_ROOT, port=find_free_port(), name="bench-coordinator")
    print(f"starting the embedded broker on {broker.endpoint_url} …", flush=True)
    broker.start()
    rounds: list[tuple[float, dict[str, float]]] = []
    try:
        for number in range(args.rounds):
            if number % 2:  # alternate which side goes first: the machine warms up and is shared
                e2e = await end_to_end(broker.endpoint_url, args.nudges)
                raw = await raw_broker(broker.endpoint_url, args.nudges)
            else:
                raw = await raw_broker(broker.endpoint_url, args.nudges)
                e2e = await end_to_end(broker.endpoint_url, args.nudges)
            rounds.append((raw, e2e))
            print(f"  round {number + 1}: raw {raw:.0f}/s, coordinator {e2e['rate']:.0f}/s", flush=True)
        unpaced = await end_to_end(broker.endpoint_url, args.nudges, paced=False)
    finally:
        broker.stop()

    print()
    print(f"{'runs in the ledger':>20} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for history, p50, p99, mean in cost:
        print(f"{history:>20,} {p50:>8.2f} {p99:>8.2f} {mean:>8.2f}")
    ratio = cost[-1][1] / cost[0][1]
    print(f"large / small history, p50: {ratio:.2f}  (target: flat, ≈ 1)   {'met' if ratio < 1.5 else 'not met'}")
    print("(one decision: Ledger.decide, the facts read, the pure decision, the lease and two outbox rows)")
    print()
    raws = [raw for raw, _ in rounds]
    rates = [e2e["rate"] for _, e2e in rounds]
    ratios = [e2e["rate"] / raw for raw, e2e in rounds]
    median = statistics.median(ratios)
    own = statistics.median(e2e["own_cpu"] for _, e2e in rounds)
    stand_in = statistics.median(e2e["github_cpu"] for _, e2e in rounds)
    print(f"{args.nudges} nudges per round, {args.rounds} rounds; {_IN_FLIGHT} in flight, {_POLLERS} receive pollers")
    print(f"{'nudges/s (median of rounds)':44}{'':>8}{'range':>14}")
    print(f"{'raw broker: publish, relay (receive,':44}{statistics.median(raws):>8.0f}{_span(raws):>14}")
    print(f"{'  send a same-size launch, delete)':44}")
    print(f"{'coordinator: decided and launched':44}{statistics.median(rates):>8.0f}{_span(rates):>14}")
    verdict = "met" if median >= 0.5 else "not met"
    print(f"coordinator / raw: {median:.2f}  (range {_span(ratios, '.2f')}; target ≥ 0.5)   {verdict}")
    print(
        f"CPU meanwhile (each its own process): the coordinator {own:.0%} of a core "
        f"({own / statistics.median(rates) * 1000:.1f} ms a nudge), the GitHub stand-in {stand_in:.0%}"
    )
    pending = statistics.median(e2e["writes_pending"] for _, e2e in rounds)
    print(f"GitHub writes paced 1 s apart, as against GitHub: {pending:.0f} left in the outbox at the last launch")
    print(
        f"writes unpaced (the writer drains meanwhile): {unpaced['rate']:.0f} nudges/s, coordinator CPU "
        f"{unpaced['own_cpu']:.0%}; every status on GitHub {unpaced['written_after_s']:.1f} s after the last launch"
    )
    print("targets are informational; the benchmark always exits 0")


def _span(values: list[float], spec: str = ".0f") -> str:
    return f"{min(values):{spec}}-{max(values):{spec}}"


if __name__ == "__main__":
    asyncio.run(main())

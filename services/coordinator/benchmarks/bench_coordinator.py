"""Coordinator benchmark behind ``make bench-coordinator``; prints tables and always exits 0.

1. Decision cost against history: the ledger's read for one decision (``Ledger.facts``) plus the pure
   decision, timed on a SQLite ledger holding 10^2 and then 10^6 finished runs (target: flat).
2. End to end on the embedded broker: nudges for opted-in issues on a GitHub test server, decided and
   launched by the real coordinator (tracker reads over HTTP, the ledger's lease, the launch published,
   the status comment and the bot assignment written back), against the raw broker moving the same number
   of messages through a queue (send + receive + delete) in the same run (target: ≥ 0.5 of raw).
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason
from agent_grid_runtime.public_broker import EmbeddedBroker, find_free_port
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, ConsumerSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import OutgoingMessage, open_sqs_transport
from agent_grid_tracker.public_github import GitHubSettings
from coordinator.app import create_app
from coordinator.decisions.public_decide import decide_launch
from coordinator.decisions.public_facts import IssueFacts, Trigger
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.ledger.public_ledger import open_ledger
from coordinator.ledger.schema import issues, repo_days, runs, trees
from coordinator.settings import Settings
from pydantic import SecretStr

_REPO_ROOT = Path(__file__).resolve().parents[3]
_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_ISSUES = 10_000
_TREES = 1_000
_OPEN = Policy(
    caps=Caps(
        max_active_runs=1_000_000,
        max_active_runs_per_repo=1_000_000,
        max_active_runs_per_tree=1_000_000,
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
    parser.add_argument("--nudges", type=int, default=300, help="nudges decided end to end")
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
    async with open_ledger(url) as ledger:
        for _ in range(samples):
            number = random.randint(1, _ISSUES)
            ref = IssueRef(repo="octo/widgets", number=number)
            root = IssueRef(repo="octo/widgets", number=number % _TREES + 1)
            facts = IssueFacts(
                ref=ref, open=True, labels=frozenset({"agent-grid"}), assignees=(), root=root, root_labels=frozenset()
            )
            started = time.perf_counter()
            ledger_facts = await ledger.facts(
                issue_key=ref.key, repo=ref.repo, root_key=root.key, agent_kind="claude_code", today=_NOW.date()
            )
            decide_launch(facts, ledger_facts, trigger, _OPEN, _NOW)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


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


async def raw_broker(endpoint: str, count: int) -> float:
    """Messages/s for send (batches of 10) + receive + delete of ``count`` messages, raw."""
    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs:
        url = (await resolve_queues(sqs, QueueSettings(prefix=f"raw{uuid.uuid4().hex[:6]}"))).launches.url
        body = wrap(Nudge(issue=IssueRef(repo="octo/widgets", number=1)), producer="bench").model_dump_json()
        started = time.perf_counter()
        for start in range(0, count, 10):
            await sqs.send_batch(
                url, [OutgoingMessage(entry_id=str(i), body=body) for i in range(min(10, count - start))]
            )
        received = 0
        while received < count:
            batch = await sqs.receive(url, max_messages=10, wait_time_s=1, visibility_timeout_s=60)
            received += len(batch)
            if batch:
                await sqs.delete_batch(url, [message.receipt_handle for message in batch])
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


async def end_to_end(endpoint: str, count: int) -> tuple[float, float, float]:
    """Nudges/s decided and launched by the coordinator (the GitHub stand-in runs in its own process), and
    the share of one core that the stand-in and this process (the coordinator) each used meanwhile."""
    queue_settings = QueueSettings(prefix=f"e2e{uuid.uuid4().hex[:6]}")
    with tempfile.TemporaryDirectory() as state, github_stand_in(count, Path(state)) as (github_url, github_pid):
        async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as sqs:
            settings = Settings(
                aws=AwsSettings(endpoint_url=endpoint),
                queues=queue_settings,
                ledger_url=f"sqlite+aiosqlite:///{Path(state) / 'ledger.sqlite3'}",
                # Unpaced: this measures the coordinator. Against GitHub, its pacing (≥ 1 s between writes,
                # ≤ 80 a minute) caps launches at 40 a minute, 2 writes each, whatever the coordinator can do.
                github=GitHubSettings(
                    api_url=github_url, token=SecretStr("bench-token"), write_interval_s=0, writes_per_minute=1_000_000
                ),
                policy=_OPEN,
                nudge_consumer=ConsumerSettings(max_in_flight=20),
            )
            queues = await resolve_queues(sqs, queue_settings)
            alice = Actor(login="alice", association=AuthorAssociation.MEMBER)
            envelopes = [
                wrap(
                    Nudge(issue=IssueRef(repo="octo/widgets", number=n), reason=NudgeReason.ISSUE_LABELED, actor=alice),
                    producer="bench",
                )
                for n in range(1, count + 1)
            ]
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                started = time.perf_counter()
                github_cpu, own_cpu = cpu_seconds(github_pid), time.process_time()
                await Publisher(transport=sqs, queue_url=queues.nudges.url).publish_many(envelopes)
                while True:
                    depth = await sqs.depth(queues.launches.url)
                    if depth.visible + depth.in_flight >= count:
                        break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                github_share = (cpu_seconds(github_pid) - github_cpu) / elapsed
                return count / elapsed, github_share, (time.process_time() - own_cpu) / elapsed


async def main() -> None:
    args = parse_args()
    configure_logging("WARNING", "console")
    print("decision cost against history (SQLite ledger):", flush=True)
    cost = await decision_cost(args)
    broker = EmbeddedBroker.in_repo(_REPO_ROOT, port=find_free_port(), name="bench-coordinator")
    print(f"starting the embedded broker on {broker.endpoint_url} …", flush=True)
    broker.start()
    try:
        raw = await raw_broker(broker.endpoint_url, args.nudges)
        e2e, github_share, own_share = await end_to_end(broker.endpoint_url, args.nudges)
    finally:
        broker.stop()

    print()
    print(f"{'runs in the ledger':>20} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for history, p50, p99, mean in cost:
        print(f"{history:>20,} {p50:>8.2f} {p99:>8.2f} {mean:>8.2f}")
    ratio = cost[-1][1] / cost[0][1]
    print(f"large / small history, p50: {ratio:.2f}  (target: flat, ≈ 1)   {'met' if ratio < 1.5 else 'not met'}")
    print()
    print(f"{'':44}{'msg/s':>8}")
    print(f"{'raw broker: send + receive + delete':44}{raw:>8.0f}")
    print(f"{'coordinator: nudges decided and launched':44}{e2e:>8.0f}")
    print(f"coordinator / raw: {e2e / raw:.2f}  (target ≥ 0.5)   {'met' if e2e / raw >= 0.5 else 'not met'}")
    print(
        f"({args.nudges} nudges, each: 1 GraphQL read, the lease, a launch, 2 GitHub writes; test server on loopback)"
    )
    print(
        f"CPU meanwhile: the GitHub stand-in {github_share:.0%} of a core, the coordinator {own_share:.0%} "
        "(a stand-in near 100 % is the bottleneck, not the coordinator)"
    )
    print("against real GitHub, its write pacing (≤ 80 content writes a minute) allows at most 40 launches a minute")
    print("targets are informational; the benchmark always exits 0")


if __name__ == "__main__":
    asyncio.run(main())

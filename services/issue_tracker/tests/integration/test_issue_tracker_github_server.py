"""The issue-tracker with the GitHub test server: real signed webhooks over HTTP, and polling mode.

Everything is real but GitHub itself: the test server on 127.0.0.1 emits webhooks when its state changes,
the issue-tracker answers them over HTTP, nudges land on the embedded broker's queue.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_issues import AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub, serve_github
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, HttpSettings, QueueSettings
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import QueueTransport
from agent_grid_tracker.public_github import GitHubSettings, GitHubTracker, open_github_tracker
from agent_grid_tracker.public_tracker import NewIssue
from aiobotocore.session import get_session
from issue_tracker.app import create_app
from issue_tracker.deliveries.public_api import open_delivery_store
from issue_tracker.polling.public_api import IssuePoller, PollingSettings
from issue_tracker.settings import Settings, WebhookSettings
from issue_tracker.webhooks.public_testing import signed_headers
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

pytestmark = pytest.mark.connected

SECRET = "shared-with-github"
REPO = "octo/widgets"
BOT = "agent-grid[bot]"


@dataclass
class World:
    github: RunningGitHub
    alice: str  # tokens
    bot: str
    sqs: QueueTransport
    nudges_url: str

    @asynccontextmanager
    async def as_user(self, token: str) -> AsyncIterator[GitHubTracker]:
        settings = GitHubSettings(api_url=self.github.base_url, token=SecretStr(token), write_interval_s=0)
        async with open_github_tracker(settings) as tracker:
            yield tracker

    async def nudges(self) -> list[Nudge]:
        found: list[Nudge] = []
        while batch := await self.sqs.receive(self.nudges_url, max_messages=10, wait_time_s=1, visibility_timeout_s=60):
            found.extend(decode(message.body).body for message in batch)
            await self.sqs.delete_batch(self.nudges_url, [message.receipt_handle for message in batch])
        return found


@pytest.fixture
async def world(sqs: QueueTransport, queue_settings: QueueSettings) -> AsyncIterator[World]:
    fake = FakeGitHub()
    fake.add_user("alice")
    fake.add_organization("octo", members=["alice"])
    fake.add_repo("octo", "widgets")
    fake.add_user(BOT)
    alice, bot = fake.add_token("alice"), fake.add_token(BOT)
    nudges_url = (await resolve_queues(sqs, queue_settings)).nudges.url
    async with serve_github(fake) as running:
        yield World(running, alice, bot, sqs, nudges_url)


@pytest.fixture
async def issue_tracker_url(
    world: World, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> AsyncIterator[str]:
    port = find_free_port()
    settings = Settings(
        aws=aws_settings,
        queues=queue_settings,
        http=HttpSettings(port=port),
        webhook=WebhookSettings(
            secret=SecretStr(SECRET),
            bot_logins=frozenset({BOT}),
            deliveries_url=f"sqlite:///{tmp_path / 'deliveries.sqlite3'}",
        ),
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_http(create_app(settings), host="127.0.0.1", port=port, stop=stop))
    url = f"http://127.0.0.1:{port}"
    try:
        await _until_healthy(url, serving)
        yield url
    finally:
        stop.set()
        await serving


async def test_github_webhooks_from_the_test_server_become_nudges_and_the_bot_is_ignored(
    world: World, issue_tracker_url: str
) -> None:
    world.github.github.add_webhook(f"{issue_tracker_url}/webhooks/github", SECRET)

    async with world.as_user(world.alice) as alice:
        parent = await alice.create_issue(REPO, NewIssue(title="Build the thing"))
        child = await alice.create_sub_issue(parent.ref, NewIssue(title="First part"))
        await alice.add_labels(parent.ref, ("agent-grid",))
        await alice.comment(parent.ref, "@agent-grid please start")
    async with world.as_user(world.bot) as bot:
        await bot.upsert_sticky_comment(parent.ref, "status", "queued")  # our own: must not nudge
        await bot.close(child.ref)  # a child closing: its parent hears of it even if the bot closed it
    await world.github.github.webhooks_idle()

    deliveries = world.github.github.deliveries
    assert deliveries
    assert all(delivery.ok for delivery in deliveries), [(d.event, d.action, d.status_code) for d in deliveries]
    nudges = await world.nudges()
    seen = {(n.issue.number, n.reason) for n in nudges}
    assert (parent.ref.number, NudgeReason.ISSUE_OPENED) in seen
    assert (parent.ref.number, NudgeReason.ISSUE_LABELED) in seen
    assert (parent.ref.number, NudgeReason.COMMENT_MENTION) in seen
    assert (parent.ref.number, NudgeReason.SUB_ISSUE_ADDED) in seen
    opened = next(n for n in nudges if n.reason is NudgeReason.ISSUE_OPENED and n.issue.number == parent.ref.number)
    assert opened.source is NudgeSource.GITHUB_WEBHOOK
    assert opened.actor is not None
    assert (opened.actor.login, opened.actor.association) == ("alice", AuthorAssociation.MEMBER)
    assert not any(n.actor is not None and n.actor.login == BOT for n in nudges), nudges

    # Redelivery keeps the delivery id: answered as a duplicate, nothing enqueued twice.
    world.github.github.redeliver(deliveries[0].guid)
    await world.github.github.webhooks_idle()
    assert world.github.github.deliveries[-1].status_code == 200
    assert await world.nudges() == []


async def test_polling_mode_nudges_each_change_once_across_restarts(
    world: World, sqs: QueueTransport, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'poll.sqlite3'}"
    settings = PollingSettings(repos=(REPO,), initial_lookback_s=3600)

    async def poll_once(tracker: GitHubTracker) -> int:
        store = await open_delivery_store(store_url)
        try:
            poller = IssuePoller(
                tracker=tracker,
                store=store,
                enqueue=Publisher(transport=sqs, queue_url=world.nudges_url).publish,
                settings=settings,
            )
            return await poller.poll_once(REPO)
        finally:
            await store.close()

    async with world.as_user(world.alice) as alice:
        first = await alice.create_issue(REPO, NewIssue(title="Polled one"))
        assert await poll_once(alice) == 1
        [nudge] = await world.nudges()
        assert (nudge.issue.number, nudge.reason, nudge.source) == (
            first.ref.number,
            NudgeReason.POLLED_UPDATE,
            NudgeSource.GITHUB_POLL,
        )
        assert nudge.actor is None  # a poll cannot tell who made the change

        # Nothing changed: nothing nudged (and, once the validator is known, GitHub answers 304).
        assert await poll_once(alice) == 0
        assert await poll_once(alice) == 0
        assert world.github.github.requests[-1].status == 304

        child = await alice.create_sub_issue(first.ref, NewIssue(title="Polled child"))
        await alice.close(child.ref)
        assert await poll_once(alice) >= 2
        reasons = {(n.issue.number, n.reason) for n in await world.nudges()}
        assert (child.ref.number, NudgeReason.ISSUE_CLOSED) in reasons
        assert (first.ref.number, NudgeReason.CHILD_CLOSED) in reasons


async def test_the_issue_tracker_polls_when_configured(
    world: World, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> None:
    async with world.as_user(world.alice) as alice:
        issue = await alice.create_issue(REPO, NewIssue(title="Found by polling"))
    settings = Settings(
        aws=aws_settings,
        queues=queue_settings,
        webhook=WebhookSettings(deliveries_url=f"sqlite:///{tmp_path / 'deliveries.sqlite3'}"),
        github=GitHubSettings(api_url=world.github.base_url, token=SecretStr(world.alice)),
        polling=PollingSettings(repos=(REPO,), interval_s=1),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        nudges = await _wait_for(world.nudges, lambda found: len(found) > 0)
    assert [(n.issue, n.reason) for n in nudges] == [
        (IssueRef(repo=REPO, number=issue.ref.number, node_id=issue.ref.node_id), NudgeReason.POLLED_UPDATE)
    ]


async def _until_healthy(url: str, serving: asyncio.Task[None], timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline and not serving.done():
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the issue-tracker at {url} did not become healthy (server task done: {serving.done()})")


async def _wait_for(
    probe: Callable[[], Any], done: Callable[[list[Nudge]], bool], timeout_s: float = 10
) -> list[Nudge]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    found: list[Nudge] = []
    while asyncio.get_running_loop().time() < deadline:
        found.extend(await probe())
        if done(found):
            return found
    raise AssertionError(f"timed out; found {found}")


async def test_a_running_issue_tracker_counts_deliveries_by_outcome_and_reports_githubs_rate_limit(
    world: World, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> None:
    fake = world.github.github
    fake.add_user("poller")  # GitHub counts requests per account: the poller's own
    poller = fake.add_token("poller")
    port = find_free_port()
    settings = Settings(
        aws=aws_settings,
        queues=queue_settings,
        http=HttpSettings(port=port),
        webhook=WebhookSettings(
            secret=SecretStr(SECRET),
            bot_logins=frozenset({BOT}),
            deliveries_url=f"sqlite:///{tmp_path / 'deliveries.sqlite3'}",
            max_body_bytes=64 * 1024,
            publish_attempts=1,
        ),
        github=GitHubSettings(api_url=world.github.base_url, token=SecretStr(poller)),
        polling=PollingSettings(repos=(REPO,), interval_s=3600),
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_http(create_app(settings), host="127.0.0.1", port=port, stop=stop))
    url = f"http://127.0.0.1:{port}"
    try:
        await _until_healthy(url, serving)
        fake.add_webhook(f"{url}/webhooks/github", SECRET)
        async with world.as_user(world.alice) as alice:
            issue = await alice.create_issue(REPO, NewIssue(title="Counted"))  # accepted
        async with world.as_user(world.bot) as bot:
            await bot.comment(issue.ref, "on it")  # ignored: our own
        await fake.webhooks_idle()
        opened = fake.deliveries[0]
        fake.redeliver(opened.guid)  # duplicate
        await fake.webhooks_idle()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            signed = signed_headers(SECRET.encode(), opened.body, event="issues")
            unsigned = {**signed, "x-hub-signature-256": "sha256=" + "0" * 64}
            garbage = b"{not json"
            answers = [
                await client.post("/webhooks/github", content=opened.body, headers=unsigned),
                await client.post(
                    "/webhooks/github",
                    content=garbage,
                    headers=signed_headers(SECRET.encode(), garbage, event="issues"),
                ),
                await client.post("/webhooks/github", content=b"x" * (65 * 1024), headers=signed),
            ]
            # The nudges queue vanishes: the next relevant delivery cannot be enqueued, and GitHub must retry it.
            await _delete_queue(aws_settings, (await resolve_queues(world.sqs, queue_settings)).nudges.url)
            failed = await client.post(
                "/webhooks/github",
                content=opened.body,
                headers=signed_headers(SECRET.encode(), opened.body, event="issues"),
            )
            metrics = await _metrics_once(client, lambda text: "agent_grid_github_rate_limit_remaining{" in text)
    finally:
        stop.set()
        await serving

    assert [answer.status_code for answer in answers] == [401, 400, 413]
    assert failed.status_code == 503
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="accepted") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="ignored") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="duplicate") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="bad_signature") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="bad_payload") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="too_large") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="enqueue_failed") == 1
    assert _sample(metrics, "agent_grid_webhook_deliveries_total", outcome="store_unavailable") == 0
    # What GitHub last said about the poller's account, which nothing else spends.
    remaining = _sample(metrics, "agent_grid_github_rate_limit_remaining", resource="core")
    assert remaining == fake.rate_limit_remaining(poller)
    assert remaining < _sample(metrics, "agent_grid_github_rate_limit_limit", resource="core")
    assert _sample(metrics, "agent_grid_github_rate_limit_reset_timestamp_seconds", resource="core") > time.time()


async def _delete_queue(aws: AwsSettings, url: str) -> None:
    session = get_session()
    async with session.create_client(
        "sqs", region_name=aws.region, endpoint_url=aws.endpoint_url, aws_access_key_id="t", aws_secret_access_key="t"
    ) as client:
        await client.delete_queue(QueueUrl=url)


async def _metrics_once(client: httpx.AsyncClient, ready: Callable[[str], bool], timeout_s: float = 10) -> str:
    async with asyncio.timeout(timeout_s):
        while not ready(text := (await client.get("/metrics")).text):
            await asyncio.sleep(0.1)
    return text


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no {name}{labels} in the scrape")

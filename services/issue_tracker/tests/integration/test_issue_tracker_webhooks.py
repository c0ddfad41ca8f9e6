import asyncio
import copy
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jsonschema
import pytest
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_nudges import NudgeReason
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_transport import QueueTransport
from issue_tracker.app import create_app
from issue_tracker.settings import Settings, WebhookSettings
from issue_tracker.webhooks.public_testing import WebhookExample, signed_headers, webhook_examples
from pydantic import SecretStr
from referencing import Registry, Resource

pytestmark = pytest.mark.connected

SECRET = b"it's a secret to everybody"
FIXTURES = Path(__file__).parents[4] / "tests" / "github_fixtures" / "node_modules" / "@octokit"
EXAMPLES = FIXTURES / "webhooks-examples"
WEBHOOK_SCHEMAS = FIXTURES / "openapi-webhooks" / "generated" / "api.github.com.json"

# What each relevant (event, action) must produce, stated independently of the implementation.
EXPECTED = {
    ("issues", "opened"): NudgeReason.ISSUE_OPENED,
    ("issues", "reopened"): NudgeReason.ISSUE_REOPENED,
    ("issues", "edited"): NudgeReason.ISSUE_EDITED,
    ("issues", "labeled"): NudgeReason.ISSUE_LABELED,
    ("issues", "unlabeled"): NudgeReason.ISSUE_UNLABELED,
    ("issues", "assigned"): NudgeReason.ISSUE_ASSIGNED,
    ("issues", "unassigned"): NudgeReason.ISSUE_UNASSIGNED,
    ("issues", "closed"): NudgeReason.ISSUE_CLOSED,
}


def installed_examples() -> list[WebhookExample]:
    assert EXAMPLES.is_dir(), f"{EXAMPLES} is missing: run `make install` (npm ci of the GitHub fixtures)"
    return list(webhook_examples(EXAMPLES))


class Grid:
    def __init__(self, client: httpx.AsyncClient, sqs: QueueTransport, nudges_url: str) -> None:
        self.client, self.sqs, self.nudges_url = client, sqs, nudges_url

    async def post(self, event: str, payload: Any, **headers: str) -> httpx.Response:
        body = json.dumps(payload).encode()
        return await self.client.post(
            "/webhooks/github", content=body, headers={**signed_headers(SECRET, body, event=event), **headers}
        )

    async def nudges(self) -> list[Any]:
        found: list[Any] = []
        while batch := await self.sqs.receive(self.nudges_url, max_messages=10, wait_time_s=1, visibility_timeout_s=60):
            found.extend(decode(m.body) for m in batch)
        return found


@pytest.fixture
def make_grid(
    sqs: QueueTransport, aws_settings: AwsSettings, queue_settings: QueueSettings, tmp_path: Path
) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(*, transport: QueueTransport | None = None) -> AsyncIterator[Grid]:
        settings = Settings(
            aws=aws_settings,
            queues=queue_settings,
            webhook=WebhookSettings(
                secret=SecretStr(SECRET.decode()),
                deliveries_url=f"sqlite:///{tmp_path / 'deliveries.sqlite3'}",
                max_body_bytes=300_000,
            ),
        )
        app = create_app(settings, transport=transport)
        nudges_url = (await resolve_queues(sqs, queue_settings)).nudges.url
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://github.test") as client,
        ):
            yield Grid(client, sqs, nudges_url)

    return make


async def test_every_published_example_is_accepted_or_ignored_and_the_relevant_ones_nudge(
    make_grid: Callable[..., Any],
) -> None:
    examples = installed_examples()
    assert len(examples) >= 700
    statuses: Counter[int] = Counter()
    expected_reasons: Counter[str] = Counter()
    expected_labels: Counter[str] = Counter()
    async with make_grid() as grid:
        for example in examples:
            response = await grid.post(example.event, example.payload)
            statuses[response.status_code] += 1
            assert response.status_code == 202, (example.source, example.event, example.action, response.text)
            reason = EXPECTED.get((example.event, example.action or ""))
            if reason is not None and not example.payload["issue"].get("pull_request"):
                assert response.json() == {"status": "accepted", "nudges": 1}, (example.event, example.action)
                expected_reasons[reason.value] += 1
                if example.action in {"labeled", "unlabeled"}:  # GitHub's label events name the label
                    expected_labels[f"{example.action}:{example.payload['label']['name']}"] += 1
            else:
                assert response.json()["status"] == "ignored", (example.event, example.action, response.text)
        nudges = await grid.nudges()

    assert statuses == {202: len(examples)}
    assert Counter(n.body.reason.value for n in nudges) == expected_reasons
    named = Counter(f"{n.body.event.removeprefix('issues.')}:{n.body.label}" for n in nudges if n.body.label)
    assert named == expected_labels
    assert expected_labels
    assert sum(expected_reasons.values()) >= 30


async def test_comment_examples_that_mention_the_bot_nudge(make_grid: Callable[..., Any]) -> None:
    comments = [
        e
        for e in installed_examples()
        if e.event == "issue_comment"
        and e.action in {"created", "edited"}
        and not e.payload["issue"].get("pull_request")
    ]
    async with make_grid() as grid:
        for example in comments:
            payload = copy.deepcopy(example.payload)
            payload["comment"]["body"] = "@agent-grid please take this one"
            response = await grid.post("issue_comment", payload)
            assert response.json() == {"status": "accepted", "nudges": 1}
        nudges = await grid.nudges()

    assert len(nudges) == len(comments) > 0
    assert {n.body.reason for n in nudges} == {NudgeReason.COMMENT_MENTION}


def official_schema(name: str) -> tuple[dict[str, Any], Registry[Any]]:
    document = json.loads(WEBHOOK_SCHEMAS.read_text())
    registry: Registry[Any] = Registry().with_resource("urn:github-webhooks", Resource.opaque(document))
    reference = document["webhooks"][name]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return {"$ref": f"urn:github-webhooks{reference}"}, registry


def built_payloads() -> list[tuple[str, str, dict[str, Any], bool]]:
    """sub_issues and issue_dependencies deliveries (absent from the examples package), built from real example
    parts, for an organization's repository and for a user-owned one (no ``organization`` key)."""
    examples = installed_examples()
    opened = next(
        e.payload for e in examples if e.event == "issues" and e.action == "opened" and "organization" in e.payload
    )
    parent, child = copy.deepcopy(opened["issue"]), copy.deepcopy(opened["issue"])
    child["number"], child["id"] = parent["number"] + 1, parent["id"] + 1
    common = {key: opened[key] for key in ("repository", "sender", "organization")}
    built = []
    for action in ("sub_issue_added", "sub_issue_removed", "parent_issue_added", "parent_issue_removed"):
        payload = {
            "action": action,
            "parent_issue_id": parent["id"],
            "parent_issue": parent,
            "sub_issue_id": child["id"],
            "sub_issue": child,
            "sub_issue_repo": opened["repository"],
            "parent_issue_repo": opened["repository"],
            **common,
        }
        built.append(("sub_issues", f"sub-issues-{action.replace('_', '-')}", payload, True))
    for action in ("blocked_by_added", "blocked_by_removed", "blocking_added", "blocking_removed"):
        payload = {
            "action": action,
            "blocked_issue_id": child["id"],
            "blocked_issue": child,
            "blocking_issue_id": parent["id"],
            "blocking_issue": parent,
            "blocking_issue_repo": opened["repository"],
            "blocked_issue_repo": opened["repository"],
            **common,
        }
        built.append(
            (
                "issue_dependencies",
                f"issue-dependencies-{action.replace('_', '-')}",
                payload,
                action.endswith("removed"),
            )
        )
    user_owned = []
    for event, schema, payload, relevant in built:
        without_org = {k: v for k, v in copy.deepcopy(payload).items() if k != "organization"}
        user_owned.append((event, schema, without_org, relevant))
    return built + user_owned


@pytest.mark.parametrize(
    ("event", "schema_name", "payload", "relevant"),
    built_payloads(),
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_sub_issue_and_dependency_deliveries_valid_per_github_schema_produce_their_nudges(
    make_grid: Callable[..., Any], event: str, schema_name: str, payload: dict[str, Any], relevant: bool
) -> None:
    schema, registry = official_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = [e.message for e in validator.iter_errors(payload)]
    if "organization" not in payload:
        # GitHub omits `organization` for user-owned repositories although the schema requires it (and so does
        # githubkit's model): the one deviation a user-owned delivery is allowed.
        errors = [message for message in errors if message != "'organization' is a required property"]
    assert errors == [], f"the built payload is not a valid {schema_name} delivery"

    async with make_grid() as grid:
        response = await grid.post(event, payload)
        nudges = await grid.nudges()

    assert response.status_code == 202
    if not relevant:
        assert response.json()["status"] == "ignored"
        assert nudges == []
        return
    [nudge] = nudges
    if event == "sub_issues":
        assert nudge.body.issue.number == payload["parent_issue"]["number"]
    else:
        assert (nudge.body.issue.number, nudge.body.reason) == (
            payload["blocked_issue"]["number"],
            NudgeReason.UNBLOCKED,
        )


async def test_signature_size_and_format_errors_are_4xx_and_enqueue_nothing(make_grid: Callable[..., Any]) -> None:
    body = json.dumps({"action": "opened", "issue": {"number": 1}}).encode()
    good = signed_headers(SECRET, body, event="issues")
    sha1_only = {k: v for k, v in good.items() if k != "x-hub-signature-256"} | {"x-hub-signature": "sha1=abc"}
    async with make_grid() as grid:
        cases = {
            "missing signature": await grid.client.post("/webhooks/github", content=body, headers=sha1_only),
            "wrong signature": await grid.client.post(
                "/webhooks/github", content=body, headers=signed_headers(b"other secret", body, event="issues")
            ),
            "tampered body": await grid.client.post("/webhooks/github", content=body + b" ", headers=good),
            "too large": await grid.post("issues", {"pad": "x" * 400_000}),
            "not json": await grid.client.post(
                "/webhooks/github", content=b"{nope", headers=signed_headers(SECRET, b"{nope", event="issues")
            ),
            "unknown content type": await grid.client.post(
                "/webhooks/github",
                content=body,
                headers=signed_headers(SECRET, body, event="issues", content_type="text/plain"),
            ),
            "no event header": await grid.client.post(
                "/webhooks/github",
                content=body,
                headers={k: v for k, v in good.items() if k != "x-github-event"},
            ),
            "relevant but malformed": await grid.client.post("/webhooks/github", content=body, headers=good),
        }
        nudges = await grid.nudges()

    assert {name: r.status_code for name, r in cases.items()} == {
        "missing signature": 401,
        "wrong signature": 401,
        "tampered body": 401,
        "too large": 413,
        "not json": 400,
        "unknown content type": 400,
        "no event header": 400,
        "relevant but malformed": 400,
    }
    assert nudges == []


async def test_form_encoded_deliveries_are_accepted(make_grid: Callable[..., Any]) -> None:
    payload = {
        "action": "opened",
        "issue": {"number": 3, "user": {"login": "a"}},
        "repository": {"full_name": "o/r"},
        "sender": {"login": "a"},
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    async with make_grid() as grid:
        response = await grid.client.post(
            "/webhooks/github",
            content=body,
            headers=signed_headers(SECRET, body, event="issues", content_type="application/x-www-form-urlencoded"),
        )
        [nudge] = await grid.nudges()

    assert response.status_code == 202
    assert (nudge.body.issue.repo, nudge.body.issue.number) == ("o/r", 3)


OPENED = {
    "action": "opened",
    "issue": {"number": 3, "user": {"login": "a"}},
    "repository": {"full_name": "o/r"},
    "sender": {"login": "a"},
}


async def test_a_redelivery_is_deduplicated_even_after_a_restart(make_grid: Callable[..., Any]) -> None:
    delivery = str(uuid.uuid4())
    async with make_grid() as grid:
        first = await grid.post("issues", OPENED, **{"x-github-delivery": delivery})
        again = await grid.post("issues", OPENED, **{"x-github-delivery": delivery})
    async with make_grid() as restarted:
        after_restart = await restarted.post("issues", OPENED, **{"x-github-delivery": delivery})
        nudges = await restarted.nudges()

    assert (first.status_code, again.status_code, after_restart.status_code) == (202, 200, 200)
    assert again.json()["status"] == after_restart.json()["status"] == "duplicate"
    assert len(nudges) == 1
    assert nudges[0].dedupe_key == f"github-delivery:{delivery}:0"


async def test_a_broker_outage_answers_503_and_the_redelivery_then_succeeds(
    make_grid: Callable[..., Any], sqs: QueueTransport
) -> None:
    from agent_grid_runtime.public_testing import InMemoryBroker

    delivery = str(uuid.uuid4())
    broker = InMemoryBroker()
    async with make_grid(transport=broker) as grid:
        broker.fail_next(10)  # both publish attempts fail
        refused = await grid.post("issues", OPENED, **{"x-github-delivery": delivery})
        broker.fail_next(0)
        redelivered = await grid.post("issues", OPENED, **{"x-github-delivery": delivery})
        queued = broker.bodies(next(url for url in broker._queues if url.endswith("-nudges")))

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"
    assert redelivered.status_code == 202, "a refused delivery is not remembered as handled"
    assert len(queued) == 1


async def test_concurrent_deliveries_share_batches_and_each_gets_its_own_answer(make_grid: Callable[..., Any]) -> None:
    async with make_grid() as grid:
        responses = await asyncio.gather(
            *(grid.post("issues", {**OPENED, "issue": {"number": n, "user": {"login": "a"}}}) for n in range(1, 41))
        )
        nudges = await grid.nudges()

    assert [r.status_code for r in responses] == [202] * 40
    assert sorted(n.body.issue.number for n in nudges) == list(range(1, 41))

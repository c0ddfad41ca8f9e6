"""Webhooks: every change made through the API is delivered, signed, in order, shaped as GitHub's published
webhook schemas (and githubkit's models) require; failures are recorded and can be redelivered."""

import asyncio
import uuid
from typing import Any

import httpx
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub
from githubkit.webhooks import verify
from githubkit_schemas.v2022_11_28.webhooks import WebhookNamespace

from .conftest import BOB, WEBHOOK_SECRET
from .contract import WebhookContract
from .harness import Receiver, webhook_receiver

parse_webhook: Any = WebhookNamespace.parse  # overloaded per literal event name


async def act_on_an_issue_tree(client: httpx.AsyncClient, owner: str, repo: str) -> None:
    base = f"repos/{owner}/{repo}/issues"
    issues = [(await client.post(base, json={"title": title})).json() for title in ("Parent", "Child", "Blocker")]
    parent, child, blocker = issues
    number = child["number"]
    await client.patch(f"{base}/{number}", json={"title": "Child!", "body": "new body"})
    await client.post(f"{base}/{number}/labels", json={"labels": ["agent"]})
    await client.post(f"{base}/{number}/assignees", json={"assignees": ["alice"]})
    await client.delete(f"{base}/{number}/labels/agent")
    await client.request("DELETE", f"{base}/{number}/assignees", json={"assignees": ["alice"]})
    comment = (await client.post(f"{base}/{number}/comments", json={"body": "hi"})).json()
    await client.patch(f"{base}/comments/{comment['id']}", json={"body": "hello"})
    await client.delete(f"{base}/comments/{comment['id']}")
    await client.post(f"{base}/{parent['number']}/sub_issues", json={"sub_issue_id": child["id"]})
    await client.request("DELETE", f"{base}/{parent['number']}/sub_issue", json={"sub_issue_id": child["id"]})
    await client.post(f"{base}/{number}/dependencies/blocked_by", json={"issue_id": blocker["id"]})
    await client.delete(f"{base}/{number}/dependencies/blocked_by/{blocker['id']}")
    await client.patch(f"{base}/{number}", json={"state": "closed"})
    await client.patch(f"{base}/{number}", json={"state": "open"})


EXPECTED = [
    ("issues", "opened"),
    ("issues", "opened"),
    ("issues", "opened"),
    ("issues", "edited"),
    ("issues", "labeled"),
    ("issues", "assigned"),
    ("issues", "unlabeled"),
    ("issues", "unassigned"),
    ("issue_comment", "created"),
    ("issue_comment", "edited"),
    ("issue_comment", "deleted"),
    ("sub_issues", "sub_issue_added"),
    ("sub_issues", "parent_issue_added"),
    ("sub_issues", "sub_issue_removed"),
    ("sub_issues", "parent_issue_removed"),
    ("issue_dependencies", "blocked_by_added"),
    ("issue_dependencies", "blocking_added"),
    ("issue_dependencies", "blocked_by_removed"),
    ("issue_dependencies", "blocking_removed"),
    ("issues", "closed"),
    ("issues", "reopened"),
]


async def test_every_change_is_delivered_signed_in_order_and_schema_valid(
    client: httpx.AsyncClient, github: FakeGitHub, receiver: Receiver, webhook_contract: WebhookContract
) -> None:
    github.add_issue("acme", "widgets", "Seeded silently", author="alice")
    await act_on_an_issue_tree(client, "acme", "widgets")
    await github.webhooks_idle()

    received = receiver.received
    assert [(r.event, r.payload["action"]) for r in received] == EXPECTED
    assert [(d.event, d.action, d.status_code, d.error) for d in github.deliveries] == [
        (event, action, 200, None) for event, action in EXPECTED
    ]
    assert [r.headers["x-github-delivery"] for r in received] == [d.guid for d in github.deliveries]
    for delivery in received:
        headers = delivery.headers
        assert verify(WEBHOOK_SECRET, delivery.body, headers["x-hub-signature-256"])
        assert uuid.UUID(headers["x-github-delivery"])
        assert headers["user-agent"].startswith("GitHub-Hookshot/")
        assert headers["content-type"] == "application/json"
        assert headers["x-github-hook-id"] == str(github.deliveries[0].hook_id)
        payload = delivery.payload
        assert webhook_contract.errors(delivery.event, payload["action"], payload) == [], delivery.event
        parse_webhook(delivery.event, delivery.body)
        assert payload["organization"]["login"] == "acme"
        assert payload["sender"]["login"] == "alice"
        assert "installation" not in payload  # no app is installed on acme

    edited = received[3].payload
    assert edited["changes"] == {"title": {"from": "Child"}, "body": {"from": ""}}
    assert received[4].payload["label"]["name"] == "agent"
    assert received[5].payload["assignee"]["login"] == "alice"
    assert received[9].payload["changes"] == {"body": {"from": "hi"}}
    added, parent_added = received[11].payload, received[12].payload
    assert (added["parent_issue"]["title"], added["sub_issue"]["title"]) == ("Parent", "Child!")
    assert added["sub_issue"]["parent_issue_url"].endswith(f"/issues/{added['parent_issue']['number']}")
    assert parent_added["repository"]["full_name"] == "acme/widgets"
    assert received[15].payload["blocking_issue"]["title"] == "Blocker"


async def test_a_user_owned_repository_has_no_organization_key(
    client: httpx.AsyncClient, github: FakeGitHub, receiver: Receiver, webhook_contract: WebhookContract
) -> None:
    async with httpx.AsyncClient(base_url=str(client.base_url), headers={"Authorization": f"token {BOB}"}) as bob:
        await act_on_an_issue_tree(bob, "bob", "solo")
    await github.webhooks_idle()

    assert [(r.event, r.payload["action"]) for r in receiver.received] == EXPECTED
    for delivery in receiver.received:
        payload = delivery.payload
        assert "organization" not in payload
        errors = webhook_contract.errors(delivery.event, payload["action"], payload)
        if delivery.event == "issue_dependencies":
            # The issue_dependencies schemas require `organization`, which GitHub omits for a user's repository
            # (as for every other event): the one deviation allowed.
            errors = [e for e in errors if e != "at []: 'organization' is a required property"]
        assert errors == [], delivery.event


async def test_payloads_carry_the_installation_when_an_app_is_installed(
    client: httpx.AsyncClient, github: FakeGitHub, receiver: Receiver, rsa_keys: tuple[str, str]
) -> None:
    app = github.add_app("agent-grid", owner="acme", public_key_pem=rsa_keys[1])
    installation = github.add_installation(app.id, "acme")
    await client.post("repos/acme/widgets/issues", json={"title": "Installed"})
    await client.post("repos/bob/solo/issues", json={"title": "Not installed"})
    await github.webhooks_idle()

    first, second = (r.payload for r in receiver.received)
    assert first["installation"]["id"] == installation.id
    assert "installation" not in second


async def test_deliveries_never_hold_up_the_api_answer(
    client: httpx.AsyncClient, github: FakeGitHub, receiver: Receiver
) -> None:
    receiver.gate = asyncio.Event()
    first = await client.post("repos/acme/widgets/issues", json={"title": "First"})
    second = await client.patch("repos/acme/widgets/issues/1", json={"state": "closed"})

    assert (first.status_code, second.status_code) == (201, 200)
    assert github.deliveries == []  # the receiver has not answered yet
    receiver.gate.set()
    await github.webhooks_idle()
    assert [(d.event, d.action) for d in github.deliveries] == [("issues", "opened"), ("issues", "closed")]


async def test_failed_deliveries_are_recorded_not_retried_and_can_be_redelivered(
    client: httpx.AsyncClient, github: FakeGitHub, receiver: Receiver
) -> None:
    receiver.status = 500
    await client.post("repos/acme/widgets/issues", json={"title": "Unlucky"})
    await github.webhooks_idle()
    [failed] = github.deliveries
    assert (failed.status_code, failed.ok, failed.redelivery) == (500, False, False)
    assert len(receiver.received) == 1

    receiver.status = 202
    github.redeliver(failed.guid)
    await github.webhooks_idle()
    redelivered = github.deliveries[-1]
    assert (redelivered.guid, redelivered.status_code, redelivered.redelivery) == (failed.guid, 202, True)
    assert receiver.received[1].body == receiver.received[0].body
    assert receiver.received[1].headers["x-github-delivery"] == failed.guid


async def test_an_unreachable_receiver_is_recorded_as_an_error(
    running: RunningGitHub, client: httpx.AsyncClient
) -> None:
    github = running.github
    async with webhook_receiver() as gone:
        url = gone.url  # a port that stops listening once the block exits
    github.add_webhook(url, "secret")
    answer = await client.post("repos/acme/widgets/issues", json={"title": "Into the void"})
    await github.webhooks_idle()

    assert answer.status_code == 201
    [delivery] = github.deliveries
    assert delivery.status_code is None
    assert delivery.error is not None
    assert "Connect" in delivery.error
    redelivery = await client.post(f"_control/webhooks/deliveries/{delivery.guid}/redeliver")
    assert redelivery.status_code == 202
    await github.webhooks_idle()
    listed = (await client.get("_control/webhooks/deliveries")).json()
    assert [(d["guid"], d["redelivery"], d["payload"]["action"]) for d in listed] == [
        (delivery.guid, False, "opened"),
        (delivery.guid, True, "opened"),
    ]

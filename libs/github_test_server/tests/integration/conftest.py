"""Fixtures: GitHub's published contracts and one server for the whole session, reset before each test.

One server (and one webhook receiver) serve every test, on the session's event loop (this directory's async tests
run with ``loop_scope="session"``); ``github`` resets the state and seeds the world each test starts from:
organization ``acme`` (member ``alice``) owning ``acme/widgets``; user ``bob`` owning ``bob/solo``; ``carol``
belongs to neither. Tokens: ``ALICE``, ``BOB``, ``CAROL`` below.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub, serve_github
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .contract import REST_SPEC, WEBHOOK_SPEC, RestContract, WebhookContract, load_json
from .harness import Api, Receiver, webhook_receiver

ALICE, BOB, CAROL = "ghp_alice_token", "ghp_bob_token", "ghp_carol_token"
WEBHOOK_SECRET = "s3cret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This directory's async tests share the session loop, where the shared server runs.
    here = Path(__file__).parent
    for item in items:
        if pytest_asyncio.is_async_test(item) and item.path.is_relative_to(here):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@pytest.fixture(scope="session")
def rest_contract() -> RestContract:
    try:
        return RestContract(load_json(REST_SPEC))
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.fixture(scope="session")
def webhook_contract() -> WebhookContract:
    try:
        return WebhookContract(load_json(WEBHOOK_SPEC))
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[str, str]:
    """An app's (private PEM, public PEM), generated once per session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def served() -> AsyncIterator[RunningGitHub]:
    async with serve_github() as running:
        yield running


@pytest.fixture
def github(served: RunningGitHub) -> FakeGitHub:
    github = served.github
    github.reset()
    github.add_user("alice", name="Alice")
    github.add_user("bob")
    github.add_user("carol")
    github.add_organization("acme", members=["alice"])
    github.add_repo("acme", "widgets", description="Widgets")
    github.add_repo("bob", "solo")
    github.add_token("alice", ALICE)
    github.add_token("bob", BOB)
    github.add_token("carol", CAROL)
    return github


@pytest.fixture
def running(served: RunningGitHub, github: FakeGitHub) -> RunningGitHub:
    return served


@pytest_asyncio.fixture(loop_scope="session")
async def client(running: RunningGitHub) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"token {ALICE}", "Accept": "application/vnd.github+json"}
    async with httpx.AsyncClient(base_url=running.base_url, headers=headers) as client:
        yield client


@pytest.fixture
def api(client: httpx.AsyncClient, rest_contract: RestContract) -> Api:
    """alice's REST client; every answer is validated against GitHub's published schema."""
    return Api(client, rest_contract)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def webhook_endpoint() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def receiver(webhook_endpoint: Receiver, running: RunningGitHub) -> Receiver:
    """The webhook receiver, emptied, answering 200, registered with the server (secret ``WEBHOOK_SECRET``)."""
    webhook_endpoint.received.clear()
    webhook_endpoint.status = 200
    webhook_endpoint.gate = None
    running.github.add_webhook(webhook_endpoint.url, WEBHOOK_SECRET)
    return webhook_endpoint

"""GitHub App authentication: an RS256 JWT signed with the app's key mints an installation token, which then
acts as ``<slug>[bot]`` within the installation's repositories and permissions."""

import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from agent_grid_github_test_server.public_models import SeededApp, SeededInstallation
from agent_grid_github_test_server.public_server import FakeGitHub, RunningGitHub
from githubkit import AppInstallationAuthStrategy
from githubkit_schemas.v2022_11_28.models import Installation, InstallationToken
from pydantic import TypeAdapter

from .harness import Api, Clock, githubkit_client

ACCESS_TOKENS = "/app/installations/{installation_id}/access_tokens"


@pytest.fixture
def app(github: FakeGitHub, rsa_keys: tuple[str, str]) -> SeededApp:
    return github.add_app("agent-grid", owner="acme", public_key_pem=rsa_keys[1])


@pytest.fixture
def installation(github: FakeGitHub, app: SeededApp) -> SeededInstallation:
    return github.add_installation(app.id, "acme")


def app_jwt(app: SeededApp, private_pem: str, *, iat_s: float | None = None, lifetime_s: int = 540) -> str:
    issued = int(iat_s if iat_s is not None else time.time() - 60)
    return jwt.encode({"iss": str(app.id), "iat": issued, "exp": issued + lifetime_s}, private_pem, algorithm="RS256")


async def test_githubkit_installation_auth_creates_issues_as_the_bot(
    running: RunningGitHub, app: SeededApp, installation: SeededInstallation, rsa_keys: tuple[str, str]
) -> None:
    auth = AppInstallationAuthStrategy(app.id, rsa_keys[0], installation.id)
    async with githubkit_client(auth, running.base_url) as gh:
        rest = gh.rest("2022-11-28")
        created = await rest.issues.async_create("acme", "widgets", title="From the bot", body="beep")
        await rest.issues.async_create_comment("acme", "widgets", created.parsed_data.number, body="boop")

    issue = created.parsed_data
    assert issue.user is not None
    assert (issue.user.login, issue.user.type) == ("agent-grid[bot]", "Bot")
    assert issue.performed_via_github_app is not None
    assert issue.performed_via_github_app.slug == "agent-grid"
    log = running.github.requests
    assert [(r.method, r.path, r.login) for r in log] == [
        ("POST", f"/app/installations/{installation.id}/access_tokens", "agent-grid"),
        ("POST", "/repos/acme/widgets/issues", "agent-grid[bot]"),
        ("POST", f"/repos/acme/widgets/issues/{issue.number}/comments", "agent-grid[bot]"),  # the token is cached
    ]


async def test_the_access_token_answer_matches_githubs_schema(
    api: Api, app: SeededApp, installation: SeededInstallation, rsa_keys: tuple[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {app_jwt(app, rsa_keys[0])}"}
    minted = await api.post(ACCESS_TOKENS, headers=bearer, installation_id=installation.id)
    located = await api.get("/repos/{owner}/{repo}/installation", headers=bearer, owner="acme", repo="widgets")
    itself = await api.get("/app", headers=bearer)
    assert (itself.json()["slug"], itself.json()["id"]) == ("agent-grid", app.id)

    assert minted.status_code == 201
    token = TypeAdapter(InstallationToken).validate_python(minted.json())
    assert token.token.startswith("ghs_")
    expires = datetime.strptime(token.expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert (token.permissions.issues, token.repository_selection) == ("write", "all")  # type: ignore[union-attr]
    assert TypeAdapter(Installation).validate_python(located.json()).id == installation.id


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong key", "A JSON web token could not be decoded"),
        ("expired", "'Expiration time' claim ('exp') must be a numeric value"),
        ("too long", "'Expiration time' claim ('exp') is too far in the future"),
        ("future iat", "'Issued at' claim ('iat') must be an Integer"),
        ("a token", "A JSON web token could not be decoded"),
    ],
)
async def test_bad_app_jwts_are_refused_with_401(
    api: Api, app: SeededApp, installation: SeededInstallation, rsa_keys: tuple[str, str], case: str, message: str
) -> None:
    now = time.time()
    credential = {
        "wrong key": app_jwt(app, rsa_keys[0])[:-8] + "AAAAAAAA",  # a signature the public key does not verify
        "expired": app_jwt(app, rsa_keys[0], iat_s=now - 1200),
        "too long": app_jwt(app, rsa_keys[0], lifetime_s=3600),
        "future iat": app_jwt(app, rsa_keys[0], iat_s=now + 600),
        "a token": "ghp_alice_token",
    }[case]
    refused = await api.post(
        ACCESS_TOKENS, headers={"Authorization": f"Bearer {credential}"}, installation_id=installation.id
    )

    assert refused.status_code == 401
    assert refused.json()["message"].startswith(message)


async def test_installation_tokens_are_scoped_to_repositories_and_permissions(
    api: Api, github: FakeGitHub, app: SeededApp, rsa_keys: tuple[str, str]
) -> None:
    github.add_repo("acme", "secret")
    github.add_issue("acme", "secret", "Hidden", author="alice")
    selected = github.add_installation(app.id, "acme", repositories=["widgets"], permissions={"issues": "write"})
    bearer = {"Authorization": f"Bearer {app_jwt(app, rsa_keys[0])}"}

    async def mint(body: dict[str, object] | None = None, installation_id: int = selected.id) -> httpx.Response:
        return await api.post(ACCESS_TOKENS, json=body, headers=bearer, installation_id=installation_id)

    write = (await mint()).json()["token"]
    read = (await mint({"permissions": {"issues": "read"}})).json()["token"]
    greedy = await mint({"permissions": {"administration": "write"}})
    outside = await mint({"repositories": ["secret"]})
    narrowed = await mint({"repositories": ["widgets"]})
    unknown = await mint(installation_id=999999)
    as_write = {"Authorization": f"token {write}"}
    visible = await api.get("/repos/{owner}/{repo}/issues", headers=as_write, owner="acme", repo="widgets")
    hidden = await api.get(
        "/repos/{owner}/{repo}/issues/{issue_number}", headers=as_write, owner="acme", repo="secret", issue_number=1
    )
    hidden_graphql = await api.client.post(
        "graphql", headers=as_write, json={"query": '{ repository(owner: "acme", name: "secret") { name } }'}
    )
    denied = await api.post(
        "/repos/{owner}/{repo}/issues",
        json={"title": "No"},
        headers={"Authorization": f"token {read}"},
        owner="acme",
        repo="widgets",
    )

    assert (greedy.status_code, outside.status_code, unknown.status_code) == (422, 422, 404)
    assert narrowed.json()["repository_selection"] == "selected"
    assert [repo["full_name"] for repo in narrowed.json()["repositories"]] == ["acme/widgets"]
    assert visible.status_code == 200
    assert hidden.status_code == 404
    assert hidden_graphql.json()["errors"][0]["type"] == "NOT_FOUND"
    assert denied.status_code == 403
    assert denied.json()["message"] == "Resource not accessible by integration"


async def test_installation_tokens_expire_after_an_hour(running: RunningGitHub, rsa_keys: tuple[str, str]) -> None:
    clock = Clock(datetime.now(UTC))
    github = running.github
    github.reset(clock=clock)
    github.add_organization("acme")
    github.add_repo("acme", "widgets")
    app = github.add_app("agent-grid", owner="acme", public_key_pem=rsa_keys[1])
    installation = github.add_installation(app.id, "acme")
    bearer = {"Authorization": f"Bearer {app_jwt(app, rsa_keys[0])}"}
    async with httpx.AsyncClient(base_url=running.base_url) as http:
        token = (await http.post(f"app/installations/{installation.id}/access_tokens", headers=bearer)).json()["token"]
        fresh = await http.get("repos/acme/widgets", headers={"Authorization": f"token {token}"})
        clock.advance(timedelta(hours=1, seconds=1))
        stale = await http.get("repos/acme/widgets", headers={"Authorization": f"token {token}"})

    assert fresh.status_code == 200
    assert (stale.status_code, stale.json()["message"]) == (401, "Bad credentials")

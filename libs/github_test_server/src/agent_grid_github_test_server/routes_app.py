"""REST: the GitHub App endpoints a JWT may call, above all minting installation access tokens."""

import secrets
from datetime import timedelta

from fastapi import APIRouter, Request, Response

from agent_grid_github_test_server.core import Core
from agent_grid_github_test_server.entities import App
from agent_grid_github_test_server.errors import ApiError, not_found, validation_failed
from agent_grid_github_test_server.http_common import caller_of, core_of, json_object, reply
from agent_grid_github_test_server.render import timestamp

router = APIRouter()

TOKEN_LIFETIME = timedelta(hours=1)
_APPS_DOCS = "https://docs.github.com/rest/apps/apps"


def _app_of(request: Request) -> App:
    app = caller_of(request).app
    if app is None:
        raise ApiError(401, "A JSON web token could not be decoded", documentation_url=_APPS_DOCS)
    return app


@router.get("/app")
async def get_authenticated_app(request: Request) -> Response:
    return reply(core_of(request).render.app(_app_of(request)))


@router.get("/repos/{owner}/{repo}/installation")
async def get_repo_installation(request: Request, owner: str, repo: str) -> Response:
    core = core_of(request)
    app = _app_of(request)
    target = core.store.repo(owner, repo)
    installation = next((i for i in core.store.installations.values() if i.app is app and i.covers(target)), None)
    if installation is None:
        raise not_found(f"{_APPS_DOCS}#get-a-repository-installation-for-the-authenticated-app")
    return reply(core.render.installation(installation))


@router.post("/app/installations/{installation_id}/access_tokens")
async def create_installation_token(request: Request, installation_id: int) -> Response:
    core = core_of(request)
    app = _app_of(request)
    installation = core.store.installations.get(installation_id)
    if installation is None or installation.app is not app:
        raise not_found(f"{_APPS_DOCS}#create-an-installation-access-token-for-an-app")
    body = await json_object(request, required=False)
    permissions = _narrowed_permissions(installation.permissions, body.get("permissions"))
    repositories = _narrowed_repositories(core, installation.account.login, body)
    for repo_id in repositories or ():
        if not installation.covers(core.store.repos_by_id[repo_id]):
            raise _not_accessible()
    value = "ghs_" + secrets.token_urlsafe(27)[:36]
    expires_at = core.store.now() + TOKEN_LIFETIME
    core.store.add_token(
        app.bot,
        value,
        expires_at=expires_at,
        installation=installation,
        permissions=permissions,
        repository_ids=repositories,
    )
    answer: dict[str, object] = {
        "token": value,
        "expires_at": timestamp(expires_at),
        "permissions": permissions,
        "repository_selection": "selected" if repositories is not None else installation.repository_selection,
    }
    if repositories is not None:
        answer["repositories"] = [core.render.repository(core.store.repos_by_id[i]) for i in sorted(repositories)]
    return reply(answer, 201)


def _narrowed_permissions(granted: dict[str, str], requested: object) -> dict[str, str]:
    if requested is None:
        return dict(granted)
    if not isinstance(requested, dict):
        raise validation_failed({"resource": "InstallationToken", "code": "invalid", "field": "permissions"})
    rank = {"read": 1, "write": 2, "admin": 3}
    for name, level in requested.items():
        if rank.get(str(level), 99) > rank.get(granted.get(name, ""), 0):
            raise ApiError(422, "The permissions requested are not granted to this installation.")
    return {str(name): str(level) for name, level in requested.items()}


def _narrowed_repositories(core: Core, account: str, body: dict[str, object]) -> set[int] | None:
    names, ids = body.get("repositories"), body.get("repository_ids")
    if names is None and ids is None:
        return None
    selected: set[int] = set()
    for name in names if isinstance(names, list) else []:
        repo = core.store.repos.get((account.lower(), str(name).lower()))
        if repo is None:
            raise _not_accessible()
        selected.add(repo.id)
    for repo_id in ids if isinstance(ids, list) else []:
        if repo_id not in core.store.repos_by_id:
            raise _not_accessible()
        selected.add(repo_id)
    return selected


def _not_accessible() -> ApiError:
    return ApiError(
        422,
        "There is at least one repository that does not exist or is not accessible to the parent installation.",
    )

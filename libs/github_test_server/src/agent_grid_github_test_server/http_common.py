"""Helpers the route modules share: the caller, JSON bodies, pagination with ``Link`` headers, replies."""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from fastapi import Request, Response

from agent_grid_github_test_server.auth import Caller
from agent_grid_github_test_server.core import Core
from agent_grid_github_test_server.entities import Repo, User
from agent_grid_github_test_server.errors import ApiError, bad_credentials, invalid_field

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def caller_of(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


def actor_of(request: Request) -> User:
    token = caller_of(request).token
    if token is None:
        raise bad_credentials()
    return token.user


def repo_of(request: Request, owner: str, repo: str) -> Repo:
    return core_of(request).store.repo(owner, repo, caller_of(request).token)


def require_issue_write(request: Request, documentation_url: str) -> None:
    token = caller_of(request).token
    if token is not None and not token.can_write_issues():
        raise ApiError(403, "Resource not accessible by integration", documentation_url=documentation_url)


async def json_value(request: Request, *, required: bool = True) -> object:
    raw = await request.body()
    if not raw.strip() and not required:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "Problems parsing JSON") from None


async def json_object(request: Request, *, required: bool = True) -> dict[str, object]:
    parsed = await json_value(request, required=required)
    if not isinstance(parsed, dict):
        raise ApiError(400, "Body should be a JSON object")
    return parsed


def reply(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json; charset=utf-8",
    )


def since_param(request: Request, resource: str) -> datetime | None:
    value = request.query_params.get("since")
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_field(resource, "since", value) from None


def choice_param(request: Request, name: str, allowed: Sequence[str], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise invalid_field("Issue", name, value)
    return value


def paginate[T](request: Request, items: Sequence[T]) -> tuple[Sequence[T], dict[str, str]]:
    """GitHub's page/per_page slicing and ``Link`` header (prev/first after page 1, next/last before the end)."""
    per_page = min(max(_int_param(request, "per_page", DEFAULT_PER_PAGE), 1), MAX_PER_PAGE)
    page = max(_int_param(request, "page", 1), 1)
    last = max((len(items) + per_page - 1) // per_page, 1)
    links: list[str] = []

    def link(number: int, rel: str) -> str:
        return f'<{request.url.include_query_params(page=number)}>; rel="{rel}"'

    if page > 1:
        links += [link(min(page - 1, last), "prev")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links += [link(1, "first")]
    headers = {"link": ", ".join(links)} if links else {}
    return items[(page - 1) * per_page : page * per_page], headers


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        return default

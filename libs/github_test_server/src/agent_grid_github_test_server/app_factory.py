"""The FastAPI app: routers, GitHub-shaped error answers, the edge middleware, the webhook worker's lifespan."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from agent_grid_github_test_server.core import Core
from agent_grid_github_test_server.edge import CONTROL_PREFIX, Edge
from agent_grid_github_test_server.errors import ApiError, not_found
from agent_grid_github_test_server.http_common import reply
from agent_grid_github_test_server.public_errors import GitHubTestServerError
from agent_grid_github_test_server.routes_app import router as app_router
from agent_grid_github_test_server.routes_graphql import router as graphql_router
from agent_grid_github_test_server.routes_issues import router as issues_router
from agent_grid_github_test_server.routes_relations import router as relations_router


def build_app(core: Core, control: APIRouter) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await core.webhooks.start()
        started: asyncio.Event | None = getattr(app.state, "started", None)
        if started is not None:
            started.set()
        try:
            yield
        finally:
            await core.webhooks.stop()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.core = core
    for router in (issues_router, relations_router, app_router, graphql_router):
        app.include_router(router)
    app.include_router(control, prefix=CONTROL_PREFIX)
    app.add_exception_handler(GitHubTestServerError, _github_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(Edge, core=core)
    return app


async def _github_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, GitHubTestServerError)
    api_error = error if isinstance(error, ApiError) else ApiError(error.status, str(error))
    return reply(api_error.body(), api_error.status, api_error.headers)


async def _invalid_request(request: Request, error: Exception) -> Response:
    if request.url.path.startswith(CONTROL_PREFIX):
        assert isinstance(error, RequestValidationError)
        return reply({"message": "Validation Failed", "errors": list(error.errors())}, 422)
    # A path parameter that is not a number (issue_number=abc) is a route GitHub does not have.
    return reply(not_found().body(), 404)


async def _http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    status = 404 if error.status_code == 405 else error.status_code  # GitHub has no 405: unknown routes are 404
    return reply(ApiError(status, "Not Found" if status == 404 else str(error.detail)).body(), status)

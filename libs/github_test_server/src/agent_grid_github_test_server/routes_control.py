"""``/_control``: the harness's own HTTP API (seed, faults, rate limits, logs, webhooks) for other processes.

Not GitHub: no authentication, no rate limits, not in the request log.
"""

from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from agent_grid_github_test_server.http_common import json_object, reply
from agent_grid_github_test_server.public_models import LoggedRequest, WebhookDelivery

if TYPE_CHECKING:
    from agent_grid_github_test_server.public_server import FakeGitHub


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultBody(_Body):
    method: str | None = None
    path_prefix: str = "/"
    count: int = 1
    status: int = 502


class SecondaryBody(_Body):
    method: str | None = None
    path_prefix: str = "/"
    count: int = 1
    retry_after_s: int = 60


class ExhaustBody(_Body):
    token: str
    reset_in_s: int = 60
    resource: Literal["core", "graphql"] = "core"


def control_router(github: "FakeGitHub") -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> Response:
        return reply({"status": "ok"})

    @router.post("/reset")
    async def reset() -> Response:
        github.reset()
        return Response(status_code=204)

    @router.post("/seed")
    async def seed(request: Request) -> Response:
        return reply(github.seed(await json_object(request)), 201)

    @router.post("/faults")
    async def add_fault(body: FaultBody) -> Response:
        github.fail_next(body.method, body.path_prefix, count=body.count, status=body.status)
        return reply(body.model_dump(), 201)

    @router.delete("/faults")
    async def clear_faults() -> Response:
        github.clear_faults()
        return Response(status_code=204)

    @router.post("/rate_limits/secondary")
    async def secondary(body: SecondaryBody) -> Response:
        github.secondary_rate_limit(body.method, body.path_prefix, count=body.count, retry_after_s=body.retry_after_s)
        return reply(body.model_dump(), 201)

    @router.post("/rate_limits/exhaust")
    async def exhaust(body: ExhaustBody) -> Response:
        github.exhaust_rate_limit(body.token, reset_in_s=body.reset_in_s, resource=body.resource)
        return reply(body.model_dump(), 201)

    @router.get("/requests")
    async def requests() -> Response:
        return reply([_request_json(logged) for logged in github.requests])

    @router.delete("/requests")
    async def clear_requests() -> Response:
        github.clear_requests()
        return Response(status_code=204)

    @router.get("/webhooks/deliveries")
    async def deliveries() -> Response:
        return reply([_delivery_json(delivery) for delivery in github.deliveries])

    @router.post("/webhooks/deliveries/{guid}/redeliver")
    async def redeliver(guid: str) -> Response:
        github.redeliver(guid)
        return reply({"guid": guid}, 202)

    return router


def _request_json(logged: LoggedRequest) -> dict[str, object]:
    fields = asdict(logged)
    fields["body"] = logged.body.decode("utf-8", "replace")
    return fields


def _delivery_json(delivery: WebhookDelivery) -> dict[str, object]:
    fields = asdict(delivery)
    del fields["body"]
    fields["payload"] = delivery.payload
    return fields

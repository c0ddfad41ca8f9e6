"""``POST /webhooks/github``: GitHub deliveries in, nudges on the queue. The composition root mounts it."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter

from issue_tracker.webhooks.intake import Enqueue, IntakeResponse, Outcome, WebhookIntake, too_large
from issue_tracker.webhooks.translate import Translation, TranslationConfig, translate

__all__ = ["Enqueue", "Translation", "TranslationConfig", "WebhookIntake", "build_webhook_router", "translate"]


def build_webhook_router(intake: WebhookIntake, *, registry: CollectorRegistry | None = None) -> APIRouter:
    """The webhook route, answering with the intake's status and a small JSON body.

    Every delivery is counted by outcome in ``agent_grid_webhook_deliveries_total`` on ``registry``.
    """
    router = APIRouter()
    deliveries = Counter(
        "agent_grid_webhook_deliveries_total",
        "GitHub webhook deliveries, by what became of them.",
        ["outcome"],
        registry=registry or CollectorRegistry(),
    )
    for outcome in Outcome:  # every outcome from the start: a rate() over a series that appears late misses its first
        deliveries.labels(outcome.value)

    def answer(response: IntakeResponse) -> JSONResponse:
        deliveries.labels(response.outcome.value).inc()
        headers = {"Retry-After": "10"} if response.status == 503 else None
        return JSONResponse(response.body, status_code=response.status, headers=headers)

    @router.post("/webhooks/github")
    async def github_webhook(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > intake.max_body_bytes:
            return answer(too_large(intake.max_body_bytes))
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > intake.max_body_bytes:
                return answer(too_large(intake.max_body_bytes))
        return answer(await intake.receive(request.headers, bytes(body)))

    return router

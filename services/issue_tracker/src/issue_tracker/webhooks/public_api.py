"""``POST /webhooks/github``: GitHub deliveries in, nudges on the queue. The composition root mounts it."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from issue_tracker.webhooks.intake import Enqueue, IntakeResponse, WebhookIntake
from issue_tracker.webhooks.translate import Translation, TranslationConfig, translate

__all__ = ["Enqueue", "Translation", "TranslationConfig", "WebhookIntake", "build_webhook_router", "translate"]


def build_webhook_router(intake: WebhookIntake) -> APIRouter:
    """The webhook route, answering with the intake's status and a small JSON body."""
    router = APIRouter()

    @router.post("/webhooks/github")
    async def github_webhook(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > intake.max_body_bytes:
            return _json(
                IntakeResponse(413, {"status": "refused", "reason": f"body over {intake.max_body_bytes} bytes"})
            )
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > intake.max_body_bytes:
                return _json(
                    IntakeResponse(413, {"status": "refused", "reason": f"body over {intake.max_body_bytes} bytes"})
                )
        return _json(await intake.receive(request.headers, bytes(body)))

    return router


def _json(response: IntakeResponse) -> JSONResponse:
    headers = {"Retry-After": "10"} if response.status == 503 else None
    return JSONResponse(response.body, status_code=response.status, headers=headers)

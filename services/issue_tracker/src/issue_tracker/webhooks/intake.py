"""The webhook intake: verify, dedupe, translate, enqueue, and answer GitHub well within its 10 s.

Bad input never gets a 5xx. Outages of our own (broker, delivery store) answer 503, so that GitHub's
redelivery (automatic for Apps, one click for an operator) recovers the delivery.
"""

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

import structlog
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_runtime.public_sqs import PublishError

from issue_tracker.deliveries.public_api import DeliveryStore
from issue_tracker.deliveries.public_errors import DeliveryStoreError
from issue_tracker.webhooks.signature import signature_is_valid
from issue_tracker.webhooks.translate import PayloadError, TranslationConfig, translate

_log = structlog.get_logger(__name__)

type Enqueue = Callable[[Envelope[Any]], Awaitable[None]]


class Outcome(StrEnum):
    """What became of a delivery, for the metrics an operator alerts on."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    BAD_SIGNATURE = "bad_signature"  # also: no secret configured
    BAD_PAYLOAD = "bad_payload"
    TOO_LARGE = "too_large"
    ENQUEUE_FAILED = "enqueue_failed"
    STORE_UNAVAILABLE = "store_unavailable"


@dataclass(frozen=True)
class IntakeResponse:
    status: int
    body: dict[str, Any]
    outcome: Outcome


@dataclass
class WebhookIntake:
    secret: bytes | None
    deliveries: DeliveryStore
    enqueue: Enqueue
    config: TranslationConfig
    max_body_bytes: int

    async def receive(self, headers: Mapping[str, str], body: bytes) -> IntakeResponse:
        started = time.perf_counter()
        delivery = headers.get("x-github-delivery", "")
        event = headers.get("x-github-event", "")
        with structlog.contextvars.bound_contextvars(delivery=delivery, github_event=event):
            response = await self._receive(headers, body, delivery, event)
            _log.info(
                "webhook_received",
                status=response.status,
                outcome=response.outcome.value,
                reason=response.body.get("reason"),
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return response

    async def _receive(self, headers: Mapping[str, str], body: bytes, delivery: str, event: str) -> IntakeResponse:
        verified = self._verify(headers, body, delivery, event)
        if isinstance(verified, IntakeResponse):
            return verified
        return await self._accept(verified, delivery, event)

    def _verify(
        self, headers: Mapping[str, str], body: bytes, delivery: str, event: str
    ) -> dict[str, Any] | IntakeResponse:
        if len(body) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        if self.secret is None:
            return _refuse(401, "webhook secret not configured: every delivery is refused")
        if not signature_is_valid(self.secret, body, headers.get("x-hub-signature-256")):
            return _refuse(401, "missing or invalid X-Hub-Signature-256")
        if not delivery or not event:
            return _refuse(400, "missing X-GitHub-Delivery or X-GitHub-Event")
        try:
            return _parse(headers.get("content-type", ""), body)
        except ValueError as error:
            return _refuse(400, str(error))

    async def _accept(self, payload: dict[str, Any], delivery: str, event: str) -> IntakeResponse:
        try:
            if await self.deliveries.seen(delivery):
                return IntakeResponse(200, {"status": "duplicate", "delivery": delivery}, Outcome.DUPLICATE)
            translation = translate(event, payload, self.config)
        except PayloadError as error:
            return _refuse(400, str(error))
        except DeliveryStoreError as error:
            return _unavailable(str(error), Outcome.STORE_UNAVAILABLE)
        if translation.log_only:
            installation = payload.get("installation")
            _log.info(
                "github_event_logged",
                action=payload.get("action"),
                installation=installation.get("id") if isinstance(installation, dict) else None,
            )
        envelopes = [
            wrap(nudge, producer="issue-tracker", dedupe_key=f"github-delivery:{delivery}:{index}")
            for index, nudge in enumerate(translation.nudges)
        ]
        try:
            for envelope in envelopes:
                await self.enqueue(envelope)
            await self.deliveries.record(delivery, event)
        except PublishError as error:
            return _unavailable(f"broker: {error}", Outcome.ENQUEUE_FAILED)
        except DeliveryStoreError as error:
            # The nudges are out; a redelivery would repeat them with the same dedupe keys, which is harmless.
            return _unavailable(str(error), Outcome.STORE_UNAVAILABLE)
        if not envelopes:
            return IntakeResponse(202, {"status": "ignored", "reason": translation.ignored}, Outcome.IGNORED)
        return IntakeResponse(202, {"status": "accepted", "nudges": len(envelopes)}, Outcome.ACCEPTED)


def _parse(content_type: str, body: bytes) -> dict[str, Any]:
    media_type = content_type.split(";")[0].strip().lower()
    try:
        if media_type == "application/json":
            payload = json.loads(body)
        elif media_type == "application/x-www-form-urlencoded":
            # GitHub's other content type: the JSON is the `payload` form field.
            payload = json.loads(parse_qs(body.decode(), strict_parsing=True)["payload"][0])
        else:
            raise ValueError(f"unsupported content type {content_type!r}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, RecursionError) as error:
        raise ValueError(f"malformed payload: {type(error).__name__}") from None
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return payload


def too_large(max_body_bytes: int) -> IntakeResponse:
    return IntakeResponse(413, {"status": "refused", "reason": f"body over {max_body_bytes} bytes"}, Outcome.TOO_LARGE)


def _refuse(status: int, reason: str) -> IntakeResponse:
    outcome = Outcome.BAD_SIGNATURE if status == 401 else Outcome.BAD_PAYLOAD
    return IntakeResponse(status, {"status": "refused", "reason": reason}, outcome)


def _unavailable(reason: str, outcome: Outcome) -> IntakeResponse:
    return IntakeResponse(503, {"status": "unavailable", "reason": reason}, outcome)

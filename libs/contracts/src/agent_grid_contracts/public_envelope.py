"""The envelope every agent-grid message travels in. Any producer may import it; backward-compatible changes only.

Envelope fields carry identity and causality; the body carries the message. SQS transport details
(receipt handles, receive counts) never enter the contract: they belong to the runtime.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, model_validator

from agent_grid_contracts.base import BodyModel, FrozenModel

__all__ = ["BodyModel", "Envelope", "wrap"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope[BodyT: BodyModel](FrozenModel):
    """Identity, causality and idempotency of one message, around its body.

    Only ``message_id``, ``kind`` and ``body`` are required on the wire, so that a person can put a
    message on a queue by hand; the rest default sensibly (``dedupe_key`` and ``correlation_id``
    default to the message id).
    """

    message_id: UUID
    kind: Annotated[str, Field(min_length=1, max_length=64, description="Body type, e.g. 'nudge'.")]
    schema_version: Annotated[int, Field(ge=1, description="Major version of the body schema.")] = 1
    occurred_at: AwareDatetime = Field(default_factory=_utc_now)
    correlation_id: Annotated[str, Field(max_length=128, description="Shared by every message of one flow.")] = ""
    causation_id: Annotated[
        str | None, Field(max_length=128, description="message_id of the message that caused this one.")
    ] = None
    dedupe_key: Annotated[
        str, Field(max_length=256, description="Idempotency key: consumers handle a key at most once.")
    ] = ""
    producer: Annotated[str, Field(max_length=64, description="Service or tool that produced the message.")] = "unknown"
    body: BodyT

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_message_id(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if value is not None}
            message_id = _normalized_uuid(data.get("message_id"))
            if not data.get("correlation_id"):
                data["correlation_id"] = message_id
            if not data.get("dedupe_key"):
                data["dedupe_key"] = message_id
        return data

    @model_validator(mode="after")
    def _kind_matches_body(self) -> Self:
        body_kind = getattr(type(self.body), "KIND", None)
        if body_kind is not None and body_kind != self.kind:
            raise ValueError(f"envelope kind {self.kind!r} does not match body kind {body_kind!r}")
        return self


def _normalized_uuid(value: object) -> str:
    # Defaults derived from the id use its canonical form, so that "6F9619FF8B86D011..." and its hyphenated
    # lowercase spelling give one dedupe key.
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except ValueError:
        return str(value or "")


def wrap[BodyT: BodyModel](
    body: BodyT,
    *,
    producer: str,
    dedupe_key: str | None = None,
    cause: Envelope[Any] | None = None,
    occurred_at: datetime | None = None,
) -> Envelope[BodyT]:
    """Put a body in a new envelope.

    Args:
        body: the message.
        producer: the service or tool sending it.
        dedupe_key: the idempotency key; defaults to the new message id (no dedupe beyond redelivery).
        cause: the message being handled when this one was produced; its correlation id is inherited and
            its message id becomes the causation id.
        occurred_at: when the fact happened; defaults to now.
    """
    message_id = uuid4()
    # Parametrize at run time: pydantic serializes a field by its declared type, so an unparametrized
    # Envelope would drop every field the body subclass adds.
    concrete: Any = Envelope[type(body)]  # type: ignore[misc]
    envelope: Envelope[BodyT] = concrete(
        message_id=message_id,
        kind=body.KIND,
        schema_version=body.SCHEMA_VERSION,
        occurred_at=occurred_at or _utc_now(),
        correlation_id=cause.correlation_id if cause else str(message_id),
        causation_id=str(cause.message_id) if cause else None,
        dedupe_key=dedupe_key or str(message_id),
        producer=producer,
        body=body,
    )
    return envelope

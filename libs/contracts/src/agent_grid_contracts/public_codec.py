"""Encoding and decoding of envelopes on the wire, and the registry of known message kinds.

Any service may import it. Backward-compatible changes only.
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import BodyModel, Envelope
from agent_grid_contracts.public_launches import LaunchAgent
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted
from agent_grid_contracts.public_nudges import Nudge

__all__ = ["KNOWN_BODIES", "ContractError", "decode", "encode"]

KNOWN_BODIES: Mapping[str, type[BodyModel]] = {
    body.KIND: body for body in (Nudge, LaunchAgent, AgentStarted, AgentHeartbeat, AgentExited, CancelRun)
}

# SQS caps a message at 256 KiB; refuse anything near it before parsing.
_MAX_MESSAGE_BYTES = 256 * 1024


class ContractError(ValueError):
    """The bytes are not a valid message of a kind the reader accepts. ``reason`` is short and loggable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(envelope: Envelope[Any]) -> str:
    """Serialize an envelope to the JSON text that goes on the queue."""
    return envelope.model_dump_json(exclude_none=True)


def decode(raw: str | bytes, *, accept: Iterable[type[BodyModel]] | None = None) -> Envelope[Any]:
    """Parse and validate one message.

    Args:
        raw: the message body as received.
        accept: the body types the caller handles; defaults to every known kind.

    Raises:
        ContractError: not JSON, not an envelope, an unaccepted kind, a newer major version, or an
            invalid body. The reason says which.
    """
    accepted = {body.KIND: body for body in accept} if accept is not None else dict(KNOWN_BODIES)
    if len(raw) > _MAX_MESSAGE_BYTES:
        raise ContractError(f"message is {len(raw)} bytes, over the {_MAX_MESSAGE_BYTES} limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ContractError(f"not JSON: {error}") from None
    except RecursionError:
        raise ContractError("not JSON this reader accepts: nested too deeply") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ContractError("missing 'kind'")
    body_type = accepted.get(kind)
    if body_type is None:
        raise ContractError(f"unknown or unaccepted kind {kind!r}; accepted: {sorted(accepted)}")
    try:
        # The version first, coerced as the envelope would coerce it ("2", 2.0): a newer major version must be
        # refused for what it is, not for the validation errors its new shape would cause.
        version = _Version.model_validate({"schema_version": data.get("schema_version", 1)}).schema_version
        if version > body_type.SCHEMA_VERSION:
            raise ContractError(
                f"{kind} schema_version {version} is newer than the supported {body_type.SCHEMA_VERSION}"
            )
        return Envelope[body_type].model_validate(data)  # type: ignore[valid-type]
    except ValidationError as error:
        raise ContractError(_summarize(error)) from None
    except RecursionError:
        raise ContractError("invalid message: nested too deeply") from None


class _Version(BaseModel):
    schema_version: int


def _summarize(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors(include_url=False)[:5]
    ]
    more = error.error_count() - len(problems)
    return "invalid message: " + "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")

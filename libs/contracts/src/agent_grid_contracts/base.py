"""Shared model configuration for every contract (private to this package)."""

from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator


class FrozenModel(BaseModel):
    # Frozen: a message is a fact, nobody edits it in flight.
    # extra="ignore": a producer deployed ahead of its consumers may add fields (additive evolution);
    # an older consumer must keep reading the message rather than dead-letter it.
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)


class TolerantEnum(StrEnum):
    """A string enum whose readers map values they do not know to ``UNKNOWN`` instead of failing.

    Newer producers may add members; an older consumer sees ``UNKNOWN`` and decides conservatively.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self:  # noqa: ARG003 - Enum's hook signature
        return cls("unknown")


class BodyModel(FrozenModel):
    """A message body. ``KIND`` is its stable name on the wire; ``SCHEMA_VERSION`` its major version."""

    KIND: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls_for_defaults(cls, data: Any) -> Any:
        # Producers in other languages often send `null` for "not set"; treat it as absent so that
        # defaults apply rather than failing on non-optional fields.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

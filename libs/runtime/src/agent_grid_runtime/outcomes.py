"""Control-flow exceptions a handler raises to instruct the consumer, and the context it receives."""

from collections.abc import Callable
from dataclasses import dataclass, field


class RetryLater(Exception):
    """Not now: make the message visible again after ``delay_s`` seconds (at most 12 hours)."""

    def __init__(self, delay_s: int, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s}s")
        self.delay_s = max(0, min(delay_s, 43_200))
        self.reason = reason


class DropMessage(Exception):
    """Never: this message cannot be handled (poison); dead-letter it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _nothing_to_release() -> None:
    return None


def _no_slot_to_hold() -> Callable[[], None]:
    return _nothing_to_release


@dataclass(frozen=True, slots=True)
class MessageContext:
    """Transport facts a handler may use for decisions (never to ack: the consumer does that)."""

    queue: str
    transport_id: str
    receive_count: int
    _hold_slot: Callable[[], Callable[[], None]] = field(default=_no_slot_to_hold, repr=False)

    def hold_slot(self) -> Callable[[], None]:
        """Keep this message's consumer slot after the handler returns; returns the (idempotent) release.

        For work that outlives its message: the execution grid acknowledges a launch once the agent has
        started, but the agent occupies the slot until it exits, so the consumer must not receive more.
        """
        return self._hold_slot()

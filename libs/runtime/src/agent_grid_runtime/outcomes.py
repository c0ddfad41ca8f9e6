"""Control-flow exceptions a handler raises to instruct the consumer, and the context it receives."""

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class MessageContext:
    """Transport facts a handler may use for decisions (never to ack: the consumer does that)."""

    queue: str
    transport_id: str
    receive_count: int

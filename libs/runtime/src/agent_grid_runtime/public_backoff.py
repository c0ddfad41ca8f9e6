"""Capped exponential backoff with full jitter, for every retry against a broker or an API."""

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays ``initial_s * multiplier**n`` capped at ``max_s``, each drawn uniformly from [half, whole].

    Half-jitter rather than full jitter keeps a floor under the delay, so a dead broker is not hammered.
    """

    initial_s: float = 0.2
    max_s: float = 30.0
    multiplier: float = 2.0
    attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the sequence."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0

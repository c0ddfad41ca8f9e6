"""Usage and cost of an agent run; carried by lifecycle events. Backward-compatible changes only."""

from typing import Annotated

from pydantic import Field

from agent_grid_contracts.base import FrozenModel

__all__ = ["Usage"]

_NonNegative = Annotated[int, Field(ge=0)]


class Usage(FrozenModel):
    """Tokens and money spent so far (heartbeats) or in total (exit). Zero when the agent does not report."""

    input_tokens: _NonNegative = 0
    output_tokens: _NonNegative = 0
    cache_read_tokens: _NonNegative = 0
    cache_write_tokens: _NonNegative = 0
    cost_usd: Annotated[float, Field(ge=0)] = 0.0
    turns: _NonNegative = 0
    reported: bool = Field(default=False, description="True when the agent reported usage at all.")

    @property
    def total_tokens(self) -> int:
        """Every token the run consumed or produced."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

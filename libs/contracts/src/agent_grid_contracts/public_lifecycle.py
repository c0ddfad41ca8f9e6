"""Lifecycle events of agent runs.

Produced by execution_grid, consumed by the coordinator. Backward-compatible changes only.

Every launched run produces one ``AgentStarted`` (or an ``AgentExited`` with ``launch_failed``), heartbeats
while it runs, and exactly one ``AgentExited``.
"""

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field

from agent_grid_contracts.base import BodyModel, TolerantEnum
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_usage import Usage

__all__ = ["AgentExited", "AgentHeartbeat", "AgentStarted", "ExitReason"]

_RunId = Annotated[str, Field(min_length=1, max_length=64)]
_WorkerId = Annotated[str, Field(min_length=1, max_length=128)]


class ExitReason(TolerantEnum):
    """The one reason a run ended."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STALLED = "stalled"
    CANCELLED = "cancelled"
    BUDGET_EXHAUSTED = "budget_exhausted"
    LOST_WORKSPACE = "lost_workspace"
    LAUNCH_FAILED = "launch_failed"
    LOST = "lost"
    UNKNOWN = "unknown"


class AgentStarted(BodyModel):
    """The agent process for ``run_id`` is running."""

    KIND: ClassVar[str] = "agent_started"

    run_id: _RunId
    issue: IssueRef
    worker_id: _WorkerId
    attempt: Annotated[int, Field(ge=1)] = 1
    pid: int | None = None
    started_at: AwareDatetime
    log_url: str | None = None


class AgentHeartbeat(BodyModel):
    """The run is alive; ``usage`` is what it has spent so far when the agent reports it."""

    KIND: ClassVar[str] = "agent_heartbeat"

    run_id: _RunId
    issue: IssueRef
    worker_id: _WorkerId
    sequence: Annotated[int, Field(ge=0)]
    elapsed_s: Annotated[float, Field(ge=0)]
    last_output_at: datetime | None = None
    usage: Usage = Usage()


class AgentExited(BodyModel):
    """The run ended, for exactly one ``reason``."""

    KIND: ClassVar[str] = "agent_exited"

    run_id: _RunId
    issue: IssueRef
    worker_id: _WorkerId
    reason: ExitReason
    exit_code: int | None = None
    duration_s: Annotated[float, Field(ge=0)] = 0.0
    usage: Usage = Usage()
    summary: Annotated[str, Field(max_length=4000)] = ""

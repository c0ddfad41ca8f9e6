"""Launch commands: the coordinator's decision to run one agent on one issue.

Produced by the coordinator, consumed by execution_grid. Backward-compatible changes only.

Secrets never travel in a launch: the grid worker mints or looks up what the run needs.
"""

from typing import Annotated, ClassVar

from pydantic import Field

from agent_grid_contracts.base import BodyModel, FrozenModel, TolerantEnum
from agent_grid_contracts.public_issues import IssueRef

__all__ = ["LaunchAgent", "RunLimits", "RunMode", "WorkspaceSpec"]


class RunMode(TolerantEnum):
    """What the run is for: ``work`` a leaf, ``plan`` (do or split) a new issue, ``manage`` (resume) a parent."""

    WORK = "work"
    PLAN = "plan"
    MANAGE = "manage"
    UNKNOWN = "unknown"


class RunLimits(FrozenModel):
    """Limits the grid enforces on the run. ``None`` means the grid's own default applies."""

    wall_clock_s: Annotated[int, Field(ge=1)] = 3600
    stall_s: Annotated[int, Field(ge=1, description="No output for this long means stalled.")] = 600
    wind_down_s: Annotated[int, Field(ge=0, description="Hand-off signal this long before the wall clock ends.")] = 120
    max_cost_usd: Annotated[float | None, Field(ge=0)] = None
    max_tokens: Annotated[int | None, Field(ge=0)] = None
    max_turns: Annotated[int | None, Field(ge=1)] = None


class WorkspaceSpec(FrozenModel):
    """Where the run's working copy comes from."""

    clone_url: str | None = Field(default=None, description="Defaults to the tracker's URL for the issue's repo.")
    ref: str | None = Field(default=None, description="Branch or commit to start from; default branch if absent.")
    branch: str | None = Field(default=None, description="Branch the agent should push its work to.")


class LaunchAgent(BodyModel):
    """Run ``agent_kind`` on ``issue`` in ``mode``. ``run_id`` is the idempotency key: one process per run id."""

    KIND: ClassVar[str] = "launch_agent"

    run_id: Annotated[str, Field(min_length=1, max_length=64)]
    issue: IssueRef
    root_issue: IssueRef | None = Field(default=None, description="Root of the issue tree, for budgets and trust.")
    mode: RunMode
    agent_kind: Annotated[str, Field(min_length=1, max_length=40, description="e.g. claude_code, codex, generic.")]
    attempt: Annotated[int, Field(ge=1)] = 1
    limits: RunLimits = RunLimits()
    workspace: WorkspaceSpec = WorkspaceSpec()
    prompt_inputs: dict[str, str] = Field(
        default_factory=dict, description="Named values the prompt template is rendered with."
    )

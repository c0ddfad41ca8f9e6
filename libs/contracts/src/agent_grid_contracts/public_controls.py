"""Control commands to one grid worker: stop a run it holds.

Produced by the coordinator (kill switch, a run the ledger already ended, a duplicate start), consumed by the
execution_grid worker named in the run's ``AgentStarted``. Each worker reads its own control queue, so a
command reaches the one process that can act on it. Backward-compatible changes only.
"""

from typing import Annotated, ClassVar

from pydantic import Field

from agent_grid_contracts.base import BodyModel

__all__ = ["CancelRun"]


class CancelRun(BodyModel):
    """Stop ``run_id`` the way a wall clock would: wind-down, SIGTERM to its process group, then SIGKILL.

    The run still ends with exactly one ``AgentExited`` (reason ``cancelled``). Unknown or finished runs are
    ignored, so repeating the command is harmless.
    """

    KIND: ClassVar[str] = "cancel_run"

    run_id: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str, Field(max_length=500)] = ""
    grace_s: Annotated[
        float | None, Field(ge=0, le=3600, description="Wind-down time before SIGTERM; None: the grid's default.")
    ] = None

"""When to wind a run down, terminate it, kill it, and why it ended: pure decisions over a clock.

The worker's driver asks :func:`next_step` what to do now and when to ask again, acts, and sleeps until then.
Keeping the rules here, without processes or timers, lets the tests walk every path with a fake clock.
"""

from dataclasses import dataclass, field
from enum import Enum

from agent_grid_contracts.public_launches import RunLimits
from agent_grid_contracts.public_lifecycle import ExitReason
from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.public_agents import ReportedEnd

__all__ = ["Action", "Step", "Watch", "exit_reason", "next_step"]


class Action(Enum):
    """What the driver does now."""

    NOTHING = "nothing"
    WIND_DOWN = "wind_down"
    """Ask the agent to checkpoint and hand off (the file, and the adapter's signal if it has one)."""
    TERMINATE = "terminate"
    """SIGTERM to the process group."""
    KILL = "kill"
    """SIGKILL to the process group."""


@dataclass(frozen=True, slots=True)
class Step:
    """Do ``action`` now, then ask again at ``wake_at`` (monotonic seconds; None: only when something happens)."""

    action: Action
    wake_at: float | None


@dataclass(slots=True)
class Watch:
    """What the supervisor knows of one run. Times are monotonic seconds; the driver updates the inputs."""

    started_at: float
    limits: RunLimits
    term_grace_s: float
    last_output_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    cancel_requested_at: float | None = None
    cancel_grace_s: float = 0.0
    cancel_reason: ExitReason = ExitReason.CANCELLED
    agent_reported_end: bool = False
    """The agent printed its own final result: its last usage report must not get it killed on its way out."""
    # Outputs of the decisions, so that each is taken once.
    wound_down_at: float | None = None
    terminated_at: float | None = None
    killed: bool = False
    stop_reason: ExitReason | None = None
    """Why the grid ended the run, once it decided to; it never changes afterwards."""

    def request_cancel(self, now: float, grace_s: float, reason: ExitReason = ExitReason.CANCELLED) -> None:
        """The coordinator or an operator (``cancelled``), or the worker shutting down (``lost``), wants it stopped.

        The first request counts: a repeated cancel neither restarts the grace period nor changes the reason.
        """
        if self.cancel_requested_at is None:
            self.cancel_requested_at = now
            self.cancel_grace_s = grace_s
            self.cancel_reason = reason


def next_step(watch: Watch, now: float) -> Step:
    """The one thing to do now, deciding (once) why the run must stop when a limit is crossed."""
    if watch.stop_reason is None:
        watch.stop_reason = _limit_crossed(watch, now)
    if watch.terminated_at is not None:
        kill_at = watch.terminated_at + watch.term_grace_s
        if watch.killed:
            return Step(Action.NOTHING, None)
        if now >= kill_at:
            watch.killed = True
            return Step(Action.KILL, None)
        return Step(Action.NOTHING, kill_at)
    if watch.stop_reason is not None:
        return _stopping(watch, now)
    # A wind-down as long as the wall clock would hand off at once: keep at least half the run for work.
    wind_down_s = min(watch.limits.wind_down_s, watch.limits.wall_clock_s / 2)
    wind_down_at = watch.started_at + watch.limits.wall_clock_s - wind_down_s
    if watch.wound_down_at is None and watch.limits.wind_down_s > 0 and now >= wind_down_at:
        watch.wound_down_at = now
        return Step(Action.WIND_DOWN, _earliest_limit(watch))
    return Step(Action.NOTHING, min(_earliest_limit(watch), wind_down_at if watch.wound_down_at is None else _NEVER))


def _stopping(watch: Watch, now: float) -> Step:
    # A cancel gets the same courtesy as the wall clock: a chance to hand off first. Limits that mean the run
    # is broken or over budget (stall, budget) go straight to SIGTERM: more time buys nothing.
    if watch.cancel_requested_at is not None and watch.cancel_grace_s > 0:
        assert watch.cancel_requested_at is not None
        hand_off_until = watch.cancel_requested_at + watch.cancel_grace_s
        if watch.wound_down_at is None:
            watch.wound_down_at = now
            return Step(Action.WIND_DOWN, hand_off_until)
        if now < hand_off_until:
            return Step(Action.NOTHING, hand_off_until)
    watch.terminated_at = now
    return Step(Action.TERMINATE, now + watch.term_grace_s)


_NEVER = float("inf")


def _limit_crossed(watch: Watch, now: float) -> ExitReason | None:
    limits = watch.limits
    if watch.cancel_requested_at is not None:
        return watch.cancel_reason
    if not watch.agent_reported_end and _over_budget(watch.usage, limits):
        return ExitReason.BUDGET_EXHAUSTED
    if now >= watch.started_at + limits.wall_clock_s:
        return ExitReason.TIMED_OUT
    if now >= (watch.last_output_at or watch.started_at) + limits.stall_s:
        return ExitReason.STALLED
    return None


def _earliest_limit(watch: Watch) -> float:
    quiet_since = watch.last_output_at or watch.started_at
    return min(watch.started_at + watch.limits.wall_clock_s, quiet_since + watch.limits.stall_s)


def _over_budget(usage: Usage, limits: RunLimits) -> bool:
    if limits.max_cost_usd is not None and usage.cost_usd > limits.max_cost_usd:
        return True
    return limits.max_tokens is not None and usage.total_tokens > limits.max_tokens


def exit_reason(
    stop_reason: ExitReason | None, exit_code: int, reported_end: ReportedEnd | None, *, workspace_present: bool
) -> ExitReason:
    """The one reason a run ended: the grid's own decision first, then what the workspace and the agent say."""
    if stop_reason is not None:
        return stop_reason
    if not workspace_present:
        return ExitReason.LOST_WORKSPACE
    if reported_end is not None and reported_end.budget_exhausted:
        return ExitReason.BUDGET_EXHAUSTED
    if exit_code == 0 and (reported_end is None or reported_end.success):
        return ExitReason.SUCCESS
    return ExitReason.FAILED

"""The supervision rules on a fake clock: every way the grid ends a run, and the order of its steps."""

from agent_grid_contracts.public_launches import RunLimits
from agent_grid_contracts.public_lifecycle import ExitReason
from agent_grid_contracts.public_usage import Usage
from execution_grid.agents.public_agents import ReportedEnd
from execution_grid.supervision.public_supervision import Action, Watch, exit_reason, next_step
from hypothesis import given
from hypothesis import strategies as st


def watch(**limits: int | float) -> Watch:
    values: dict[str, int | float] = {"wall_clock_s": 100, "stall_s": 30, "wind_down_s": 10}
    values.update(limits)
    return Watch(started_at=0.0, limits=RunLimits(**values), term_grace_s=5.0)  # type: ignore[arg-type]


def test_a_quiet_healthy_run_sleeps_until_its_earliest_deadline() -> None:
    run = watch()
    run.last_output_at = 20.0

    step = next_step(run, 21.0)

    assert step.action is Action.NOTHING
    assert step.wake_at == 50.0, "the stall deadline (20 + 30) comes before wind-down (90)"


def test_the_wall_clock_winds_down_first_then_terminates_then_kills() -> None:
    run = watch(stall_s=1000)

    assert next_step(run, 89.0).action is Action.NOTHING
    assert next_step(run, 90.0).action is Action.WIND_DOWN
    assert next_step(run, 95.0).action is Action.NOTHING
    assert next_step(run, 100.0).action is Action.TERMINATE
    assert next_step(run, 104.0).action is Action.NOTHING
    assert next_step(run, 105.0).action is Action.KILL
    assert next_step(run, 200.0).action is Action.NOTHING
    assert run.stop_reason is ExitReason.TIMED_OUT


def test_a_stall_terminates_without_a_hand_off() -> None:
    run = watch()
    run.last_output_at = 10.0

    step = next_step(run, 40.0)

    assert step.action is Action.TERMINATE
    assert run.stop_reason is ExitReason.STALLED
    assert run.wound_down_at is None


def test_spending_past_the_budget_stops_the_run_at_once() -> None:
    run = Watch(started_at=0.0, limits=RunLimits(max_cost_usd=1.0, max_tokens=10_000), term_grace_s=5.0)
    run.usage = Usage(cost_usd=0.5, output_tokens=20_000)

    assert next_step(run, 1.0).action is Action.TERMINATE
    assert run.stop_reason is ExitReason.BUDGET_EXHAUSTED


def test_a_cancel_gets_its_grace_to_hand_off_and_the_first_request_counts() -> None:
    run = watch()
    run.request_cancel(10.0, 5.0)
    run.request_cancel(12.0, 60.0, ExitReason.LOST)

    assert next_step(run, 10.0).action is Action.WIND_DOWN
    assert next_step(run, 14.0).action is Action.NOTHING
    assert next_step(run, 15.0).action is Action.TERMINATE
    assert run.stop_reason is ExitReason.CANCELLED


def test_exit_reasons_prefer_the_grids_own_decision_then_the_workspace_then_the_agent() -> None:
    said_ok = ReportedEnd(success=True)
    assert exit_reason(ExitReason.STALLED, 0, said_ok, workspace_present=True) is ExitReason.STALLED
    assert exit_reason(None, 0, said_ok, workspace_present=False) is ExitReason.LOST_WORKSPACE
    budget = ReportedEnd(success=False, budget_exhausted=True)
    assert exit_reason(None, 1, budget, workspace_present=True) is ExitReason.BUDGET_EXHAUSTED
    assert exit_reason(None, 0, None, workspace_present=True) is ExitReason.SUCCESS
    assert exit_reason(None, 0, ReportedEnd(success=False), workspace_present=True) is ExitReason.FAILED
    assert exit_reason(None, 2, None, workspace_present=True) is ExitReason.FAILED


@given(
    times=st.lists(st.floats(min_value=0, max_value=500), min_size=1, max_size=40),
    outputs=st.lists(st.floats(min_value=0, max_value=500), max_size=10),
    cancel_at=st.none() | st.floats(min_value=0, max_value=500),
)
def test_whatever_the_timing_the_reason_is_set_once_and_kill_follows_terminate_after_the_grace(
    times: list[float], outputs: list[float], cancel_at: float | None
) -> None:
    run = watch()
    events = sorted([(t, "tick") for t in times] + [(t, "output") for t in outputs])
    actions: list[tuple[float, Action]] = []
    first_reason = None
    for now, kind in events:
        if kind == "output":
            run.last_output_at = now
            continue
        if cancel_at is not None and now >= cancel_at:
            run.request_cancel(cancel_at, 3.0)
        step = next_step(run, now)
        if step.wake_at is not None:
            assert step.wake_at >= now or step.action is not Action.NOTHING
        if step.action is not Action.NOTHING:
            actions.append((now, step.action))
        if first_reason is None:
            first_reason = run.stop_reason
        elif run.stop_reason is not first_reason:
            raise AssertionError("the stop reason changed once decided")
    kinds = [action for _, action in actions]
    assert kinds.count(Action.TERMINATE) <= 1
    assert kinds.count(Action.KILL) <= 1
    assert kinds.count(Action.WIND_DOWN) <= 1
    if Action.KILL in kinds:
        terminated = next(t for t, a in actions if a is Action.TERMINATE)
        killed = next(t for t, a in actions if a is Action.KILL)
        assert killed >= terminated + run.term_grace_s

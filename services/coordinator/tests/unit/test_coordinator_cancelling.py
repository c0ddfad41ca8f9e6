"""The run canceller on its own: one queue lookup per worker, and nothing it cannot deliver ever raises."""

from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_runtime.public_queues import ensure_control_queue
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_testing import InMemoryBroker
from coordinator.handling.public_cancelling import RunCanceller
from structlog.testing import capture_logs

SETTINGS = QueueSettings(prefix="unit")


async def test_a_worker_s_control_queue_is_looked_up_once_and_gets_the_command() -> None:
    broker = InMemoryBroker()
    control = await ensure_control_queue(broker, SETTINGS, "w1")
    canceller = RunCanceller(transport=broker, queues=SETTINGS)
    broker.calls.clear()

    assert await canceller.cancel("run-1", "w1", reason="tree killed")
    assert await canceller.cancel("run-2", "w1", reason="tree killed")

    assert broker.calls.count("queue_url") == 1
    commands = [decode(body).body for body in broker.bodies(control.url)]
    assert commands == [
        CancelRun(run_id="run-1", reason="tree killed"),
        CancelRun(run_id="run-2", reason="tree killed"),
    ]


async def test_a_missing_queue_or_a_failing_broker_is_logged_never_raised_and_looked_up_again() -> None:
    broker = InMemoryBroker()
    canceller = RunCanceller(transport=broker, queues=SETTINGS)
    with capture_logs() as logs:
        assert not await canceller.cancel("run-1", "gone", reason="duplicate start")
        assert "ensure_queue" not in broker.calls  # the worker's to create, never the coordinator's
        await ensure_control_queue(broker, SETTINGS, "w1")
        assert await canceller.cancel("run-2", "w1", reason="x")
        broker.fail_next(100)
        assert not await canceller.cancel("run-3", "w1", reason="x")
        broker.fail_next(0)
        broker.calls.clear()
        assert await canceller.cancel("run-4", "w1", reason="x")

    assert broker.calls.count("queue_url") == 1  # the failure dropped the remembered URL
    undeliverable = [(line["run_id"], line["worker_id"]) for line in logs if line["event"] == "cancel_undeliverable"]
    assert undeliverable == [("run-1", "gone"), ("run-3", "w1")]

import json
import re

from agent_grid_runtime.public_queues import control_queue_name, ensure_control_queue
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_testing import InMemoryBroker

SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def test_a_plain_worker_id_names_its_control_queue_as_is() -> None:
    assert control_queue_name(QueueSettings(prefix="grid"), "worker-1") == "grid-ctl-worker-1"


def test_control_queue_names_are_valid_and_distinct_for_awkward_worker_ids() -> None:
    settings = QueueSettings(prefix="p" * 40)
    ids = ["host.example.com", "host-example-com", "w" * 128, "w" * 127 + "x", "ünïcode/worker:1"]
    names = [control_queue_name(settings, worker_id) for worker_id in ids]
    assert all(SQS_NAME.match(name) for name in names), names
    assert len(set(names)) == len(names)


async def test_ensure_control_queue_is_idempotent_and_redrives_to_the_shared_dead_letter_queue() -> None:
    broker = InMemoryBroker()
    settings = QueueSettings(prefix="unit", max_receive_count=4)
    first = await ensure_control_queue(broker, settings, "w1")
    again = await ensure_control_queue(broker, settings, "w1")
    other = await ensure_control_queue(broker, settings, "w2")

    assert first == again
    assert other.url != first.url
    assert other.dead_letter_url == first.dead_letter_url
    redrive = json.loads(broker.attributes(first.url)["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == "4"

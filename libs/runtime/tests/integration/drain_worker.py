"""A consumer process for the SIGTERM drain test: records each handled message id to a file, one per line, and
each started one to ``<file>.started``, so that the test can stop it while handlers are in flight."""

import asyncio
import os
import signal
import sys

from agent_grid_contracts.public_envelope import Envelope
from agent_grid_contracts.public_nudges import Nudge
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_settings import AwsSettings, ConsumerSettings
from agent_grid_runtime.public_sqs import Consumer, Handlers, MessageContext
from agent_grid_runtime.public_transport import open_sqs_transport


async def main(endpoint: str, queue_url: str, dead_letter_url: str, record_path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    record = open(record_path, "a", buffering=1)  # noqa: SIM115, ASYNC230 - line-buffered log of handled ids
    started = open(record_path + ".started", "a", buffering=1)  # noqa: SIM115, ASYNC230 - and of started ones

    async def handle(envelope: Envelope[Nudge], context: MessageContext) -> None:
        started.write(f"{envelope.message_id}\n")
        await asyncio.sleep(0.5)
        record.write(f"{envelope.message_id}\n")
        os.fsync(record.fileno())

    async with open_sqs_transport(AwsSettings(endpoint_url=endpoint)) as transport:
        consumer = Consumer(
            transport,
            queue_url=queue_url,
            dead_letter_url=dead_letter_url,
            handlers=Handlers().on(Nudge, handle),
            settings=ConsumerSettings(max_in_flight=5, wait_time_s=20, visibility_timeout_s=3, drain_timeout_s=10),
            queue_label="nudges",
        )
        task = asyncio.create_task(consumer.run())
        print("ready", flush=True)  # noqa: T201
        await stop.wait()
        consumer.stop()
        await task


if __name__ == "__main__":
    configure_logging("INFO", "json")
    asyncio.run(main(*sys.argv[1:5]))

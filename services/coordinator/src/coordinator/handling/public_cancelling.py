"""Telling one grid worker to stop a run: ``CancelRun`` on the worker's own control queue.

Built by the composition root (``app.py``) and used through the :class:`Coordinator`. Best effort by design:
a command that cannot be delivered is logged and dropped, never raised into a handler, because the worker
it is for is gone (its control queue was never created, or no longer answers), and a gone worker's runs fall
silent, so the lost-run sweep ends them.
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import structlog
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_runtime.public_queues import control_queue_name
from agent_grid_runtime.public_settings import QueueSettings
from agent_grid_runtime.public_sqs import Publisher, PublishError
from agent_grid_runtime.public_transport import QueueTransport, TransportError

__all__ = ["RunCanceller"]

_log = structlog.get_logger(__name__)
# Workers come and go (a worker id per process); remember the queues of this many recent ones.
_REMEMBERED_WORKERS = 1024
# A cancel is sent from a message handler: a few quick retries, then the sweep is the fallback.
_PUBLISH_ATTEMPTS = 3


@dataclass
class RunCanceller:
    """Sends ``CancelRun`` to the worker that holds a run, looking its control queue up once per worker.

    The coordinator only looks control queues up, never creates them: each worker creates its own at start,
    so a missing queue means the worker never ran or is gone, and a queue created here would only collect
    commands nobody reads.
    """

    transport: QueueTransport
    queues: QueueSettings
    producer: str = "coordinator"
    _urls: OrderedDict[str, str] = field(default_factory=OrderedDict, init=False, repr=False)

    async def cancel(self, run_id: str, worker_id: str, *, reason: str, cause: Envelope[Any] | None = None) -> bool:
        """Tell ``worker_id`` to stop ``run_id``; False (logged as ``cancel_undeliverable``) when it cannot be told.

        Args:
            run_id: the run to stop.
            worker_id: the worker that runs it (``AgentStarted.worker_id``).
            reason: why, for the worker's log and the run's exit.
            cause: the message being handled, for correlation.
        """
        command = CancelRun(run_id=run_id, reason=reason[:500])
        try:
            url = await self._queue_url(worker_id)
            publisher = Publisher(
                transport=self.transport, queue_url=url, queue_label="control", max_attempts=_PUBLISH_ATTEMPTS
            )
            await publisher.publish(wrap(command, producer=self.producer, cause=cause))
        except (TransportError, PublishError) as error:
            # A queue deleted since it was looked up is looked up again next time.
            self._urls.pop(worker_id, None)
            _log.warning("cancel_undeliverable", run_id=run_id, worker_id=worker_id, reason=reason, error=str(error))
            return False
        _log.info("cancel_sent", run_id=run_id, worker_id=worker_id, reason=reason)
        return True

    async def _queue_url(self, worker_id: str) -> str:
        url = self._urls.get(worker_id)
        if url is None:
            url = await self.transport.queue_url(control_queue_name(self.queues, worker_id))
            self._urls[worker_id] = url
            if len(self._urls) > _REMEMBERED_WORKERS:
                self._urls.popitem(last=False)
        else:
            self._urls.move_to_end(worker_id)
        return url

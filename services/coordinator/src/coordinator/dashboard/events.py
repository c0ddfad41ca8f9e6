"""``GET /api/events``: the ledger's run events as Server-Sent Events, for the dashboard.

Each stream follows the ``run_events`` table by its autoincrement id, a primary-key range per poll, so it sees
what every coordinator sharing the database records, and costs the same however long the history. The id
of each event is its SSE id: a reconnecting ``EventSource`` sends it back as ``Last-Event-ID`` and the stream
resumes after it.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from coordinator.api.public_api import RunOut
from coordinator.ledger.public_ledger import Ledger, LedgerEvent, RunRecord

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    """How a stream polls, keeps the connection alive and resumes (see ``DashboardSettings``)."""

    poll_interval_s: float
    keepalive_s: float
    backlog: int
    gap_wait_s: float
    batch: int = 200
    retry_ms: int = 2000


class EventCursor:
    """Where one stream is in the ledger's events, and the numbers it skipped that may still commit.

    On PostgreSQL ids come from a sequence when a row is inserted, not when it commits: with several
    coordinators, event 11 can be visible before event 10. A stream that moved past 10 looks for it again
    for ``gap_wait_s``; a number that never shows up was rolled back.
    """

    def __init__(self, position: int, *, gap_wait_s: float, max_gaps: int = 1000) -> None:
        self.position = position
        self._gap_wait_s = gap_wait_s
        self._max_gaps = max_gaps
        self._gaps: dict[int, float] = {}

    def missing(self, now: float) -> list[int]:
        """The skipped numbers still worth looking for at ``now`` (monotonic seconds)."""
        self._gaps = {number: until for number, until in self._gaps.items() if until > now}
        return sorted(self._gaps)

    def advance(self, events: Sequence[LedgerEvent], now: float) -> list[tuple[LedgerEvent, bool]]:
        """The events to send, in order, each with whether it moves the stream's position (and so its SSE id).

        A late event (one of the skipped numbers) is sent without moving the position: the client's
        ``Last-Event-ID`` stays at the highest number it saw. Events at or below the position are repeats.
        """
        out: list[tuple[LedgerEvent, bool]] = []
        for event in sorted(events, key=lambda found: found.id):
            if self._gaps.pop(event.id, None) is not None:
                out.append((event, False))
                continue
            if event.id <= self.position:
                continue
            for skipped in range(self.position + 1, min(event.id, self.position + 1 + self._max_gaps)):
                if len(self._gaps) >= self._max_gaps:
                    break
                self._gaps[skipped] = now + self._gap_wait_s
            self.position = event.id
            out.append((event, True))
        return out


def parse_position(last_event_id: str | None, after: int | None) -> int | None:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnect) or else ``after``; None when neither says."""
    if last_event_id is not None:
        text = last_event_id.strip()
        return int(text) if text.isascii() and text.isdigit() else None  # "²".isdigit(), and int("²") fails
    return after


async def event_stream(
    ledger: Ledger, start: int | None, settings: StreamSettings, stopping: asyncio.Event
) -> AsyncIterator[str]:
    """The SSE text of the stream: ``run`` events (numbered), ``control`` (paused or not) and ``resync``.

    Starting with no position, or one the ledger cannot continue from (ahead of its latest event, or more than
    ``backlog`` events behind), the stream says ``resync`` (the client reloads what it shows) and follows from
    the latest event. Ends when the server begins to stop, or on a ledger error (the client reconnects).
    """
    yield f"retry: {settings.retry_ms}\n\n"
    try:
        latest, paused = await _shielded(_latest_and_paused(ledger))
    except Exception:
        _log.exception("dashboard_events_failed")
        return
    if start is None or start > latest or latest - start > settings.backlog:
        cursor = EventCursor(latest, gap_wait_s=settings.gap_wait_s)
        yield _message("resync", {"last_event_id": latest}, event_id=latest)
    else:
        cursor = EventCursor(start, gap_wait_s=settings.gap_wait_s)
    yield _message("control", {"paused": paused})
    last_sent = time.monotonic()
    while not stopping.is_set():
        try:
            now = time.monotonic()
            batch, records, now_paused = await _shielded(_poll(ledger, cursor, now, settings.batch))
        except Exception:
            _log.exception("dashboard_events_failed")
            return
        for event, numbered in batch:
            yield _message("run", _run_event(event, records.get(event.run_id)), event_id=event.id if numbered else None)
        changed = now_paused != paused
        if changed:
            paused = now_paused
            yield _message("control", {"paused": paused})
        if batch or changed:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= settings.keepalive_s:
            # A comment line: proxies and browsers see traffic, the client sees no event.
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if len(batch) >= settings.batch:
            continue  # more are waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=settings.poll_interval_s)


async def _latest_and_paused(ledger: Ledger) -> tuple[int, bool]:
    return await ledger.last_event_id(), await ledger.paused()


async def _poll(
    ledger: Ledger, cursor: EventCursor, now: float, batch: int
) -> tuple[list[tuple[LedgerEvent, bool]], dict[str, RunRecord], bool]:
    events = await ledger.events_after(cursor.position, limit=batch, also=cursor.missing(now))
    to_send = cursor.advance(events, now)
    records = await ledger.run_records({event.run_id for event, _ in to_send})
    return to_send, {record.run_id: record for record in records}, await ledger.paused()


async def _shielded[T](work: Coroutine[Any, Any, T]) -> T:
    # A client that goes away cancels its stream; the query it was running finishes anyway, so the ledger's
    # connection (SQLite has one) goes back to the pool in a known state rather than mid-statement.
    task = asyncio.ensure_future(work)
    task.add_done_callback(_consume_outcome)
    return await asyncio.shield(task)


def _consume_outcome(task: "asyncio.Future[Any]") -> None:
    # Retrieved here too, so a failure nobody awaited any more (the client left) is not reported as lost.
    if not task.cancelled():
        task.exception()


def _run_event(event: LedgerEvent, record: RunRecord | None) -> dict[str, Any]:
    return {
        "id": event.id,
        "run_id": event.run_id,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "detail": event.detail,
        "run": RunOut.model_validate(record).model_dump(mode="json") if record is not None else None,
    }


def _message(kind: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    numbered = f"id: {event_id}\n" if event_id is not None else ""
    return f"{numbered}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

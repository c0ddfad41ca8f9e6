"""The dashboard's pure parts: following event numbers with gaps, where a stream starts, escaping, sessions."""

from datetime import UTC, datetime, timedelta

import pytest
from coordinator.api.public_auth import ApiAuth
from coordinator.dashboard.events import EventCursor, parse_position
from coordinator.dashboard.html import Html, el, fragment
from coordinator.ledger.public_ledger import LedgerEvent
from pydantic import SecretStr

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def events(*ids: int) -> list[LedgerEvent]:
    return [LedgerEvent(id=n, run_id=f"run-{n}", at=AT, kind="noted", detail="") for n in ids]


def sent(out: list[tuple[LedgerEvent, bool]]) -> list[tuple[int, bool]]:
    return [(event.id, numbered) for event, numbered in out]


def test_events_in_order_move_the_position_and_repeats_are_dropped() -> None:
    cursor = EventCursor(3, gap_wait_s=10)

    assert sent(cursor.advance(events(2, 3, 4, 5), now=0)) == [(4, True), (5, True)]
    assert cursor.position == 5
    assert cursor.missing(now=0) == []


def test_a_skipped_number_is_looked_for_and_sent_late_without_moving_the_position() -> None:
    cursor = EventCursor(9, gap_wait_s=10)

    assert sent(cursor.advance(events(11, 12), now=0)) == [(11, True), (12, True)]
    assert cursor.missing(now=1) == [10]  # event 10's transaction has not committed yet
    assert sent(cursor.advance(events(10, 13), now=2)) == [(10, False), (13, True)]
    assert (cursor.position, cursor.missing(now=3)) == (13, [])


def test_a_number_that_never_shows_up_is_given_up_after_the_wait() -> None:
    cursor = EventCursor(0, gap_wait_s=10)
    cursor.advance(events(1, 3), now=0)

    assert cursor.missing(now=9.9) == [2]
    assert cursor.missing(now=10.1) == []
    assert sent(cursor.advance(events(2), now=11)) == []  # too late, and behind the position: a repeat


def test_gaps_tracked_are_bounded() -> None:
    cursor = EventCursor(0, gap_wait_s=10, max_gaps=5)
    cursor.advance(events(1_000_000), now=0)

    assert cursor.missing(now=0) == [1, 2, 3, 4, 5]
    assert cursor.position == 1_000_000


@pytest.mark.parametrize(
    ("last_event_id", "after", "start"),
    [
        ("7", None, 7),
        ("7", 3, 7),  # a reconnect's Last-Event-ID wins over the page's first position
        (None, 3, 3),
        (None, None, None),
        ("garbage", 3, None),  # unknown: start over (resync)
        ("-1", None, None),
    ],
)
def test_where_a_stream_starts(last_event_id: str | None, after: int | None, start: int | None) -> None:
    assert parse_position(last_event_id, after) == start


def test_text_is_escaped_in_content_and_attributes_and_markup_is_not() -> None:
    rendered = el("a", "<b>&", title='"><script>', href="/x?a=1&b=2", data_run_id="r", hidden=True, lang=None)

    assert rendered == (
        '<a title="&quot;&gt;&lt;script&gt;" href="/x?a=1&amp;b=2" data-run-id="r" hidden>&lt;b&gt;&amp;</a>'
    )
    assert fragment(Html("<br>"), "<br>", None, ["x", 1]) == "<br>&lt;br&gt;x1"


def test_a_session_is_valid_for_its_token_until_it_expires() -> None:
    auth = ApiAuth(SecretStr("the-token"))
    session = auth.new_session(now=AT, ttl_s=60)

    assert auth.session_valid(session, now=AT + timedelta(seconds=59))
    assert not auth.session_valid(session, now=AT + timedelta(seconds=61))
    assert not ApiAuth(SecretStr("another-token")).session_valid(session, now=AT)
    assert not ApiAuth(None).session_valid(session, now=AT)
    version, expires, mac = session.split(".")
    assert not auth.session_valid(f"{version}.{int(expires) + 3600}.{mac}", now=AT)
    tampered = mac[:-1] + ("1" if mac.endswith("0") else "0")
    assert not auth.session_valid(f"{version}.{expires}.{tampered}", now=AT)
    assert not auth.session_valid("", now=AT)
    assert "the-token" not in session


def test_no_token_configured_means_no_session_and_no_login() -> None:
    auth = ApiAuth(None)

    assert not auth.enabled
    assert not auth.token_matches("")
    with pytest.raises(RuntimeError):
        auth.new_session(now=AT, ttl_s=60)

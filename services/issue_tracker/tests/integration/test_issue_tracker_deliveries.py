import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from issue_tracker.deliveries.public_api import DeliveryStore, open_delivery_store
from issue_tracker.deliveries.public_errors import DeliveryStoreError

POSTGRES_URL = os.environ.get("AGENT_GRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def postgres_or_skip() -> str:
    try:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {POSTGRES_URL}: {error}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} ({error}); set AGENT_GRID_TEST_POSTGRES_URL")
    await connection.close()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'deliveries.sqlite3'}"
    else:
        yield await postgres_or_skip()


async def test_two_replicas_share_what_was_delivered(store_url: str) -> None:
    first: DeliveryStore = await open_delivery_store(store_url)
    second: DeliveryStore = await open_delivery_store(store_url)
    delivery = str(uuid.uuid4())
    try:
        assert not await first.seen(delivery)
        await first.record(delivery, "issues")
        await first.record(delivery, "issues")  # idempotent

        assert await second.seen(delivery)
        assert not await second.seen(str(uuid.uuid4()))
    finally:
        await first.close()
        await second.close()


async def test_what_was_delivered_survives_a_restart(store_url: str) -> None:
    delivery = str(uuid.uuid4())
    before = await open_delivery_store(store_url)
    await before.record(delivery, "issues")
    await before.close()

    after = await open_delivery_store(store_url)
    try:
        assert await after.seen(delivery)
    finally:
        await after.close()


async def test_poll_cursors_are_shared_replaced_and_survive_a_restart(store_url: str) -> None:
    name = f"poll:octo/{uuid.uuid4().hex[:8]}"
    first = await open_delivery_store(store_url)
    assert await first.load_cursor(name) is None
    await first.save_cursor(name, '{"since": 1}')
    await first.save_cursor(name, '{"since": 2}')
    await first.close()

    second = await open_delivery_store(store_url)
    try:
        assert await second.load_cursor(name) == '{"since": 2}'
    finally:
        await second.close()


async def test_an_unreachable_store_is_a_clear_error() -> None:
    with pytest.raises(DeliveryStoreError, match="cannot open"):
        await open_delivery_store("postgresql://nobody@127.0.0.1:9/none")


def test_an_unknown_store_url_is_refused() -> None:
    import asyncio

    with pytest.raises(ValueError, match="unsupported delivery store URL"):
        asyncio.run(open_delivery_store("redis://localhost"))

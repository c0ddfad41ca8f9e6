from pathlib import Path

import pytest
from coordinator.ledger.public_ledger import open_ledger


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://", "sqlite+aiosqlite:///file:ledger?mode=memory&uri=true"],
)
async def test_a_sqlite_ledger_that_is_not_a_file_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="must be a file path"):
        async with open_ledger(url):
            pass


async def test_a_sqlite_ledger_with_options_opens_the_file_its_path_names(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "ledger.sqlite3"
    async with open_ledger(f"sqlite+aiosqlite:///{path}?timeout=5") as ledger:
        assert await ledger.runs(limit=1) == []
    assert path.exists()

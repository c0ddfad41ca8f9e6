import logging

import pytest
from agent_grid_runtime.public_logging import configure_logging


def test_access_logs_never_carry_a_token_from_the_query(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", cache_loggers=False)
    access = logging.getLogger("uvicorn.access")
    line = '%s - "%s %s HTTP/%s" %d'
    access.info(line, "127.0.0.1:5555", "GET", "/dashboard?token=s3cret-token&next=/dashboard/runs", "1.1", 303)
    access.info(line, "127.0.0.1:5555", "GET", "/api/runs?limit=5", "1.1", 200)

    written = capsys.readouterr().err
    assert "s3cret-token" not in written
    assert "/dashboard?token=***&next=/dashboard/runs" in written
    assert "/api/runs?limit=5" in written

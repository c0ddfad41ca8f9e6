import asyncio
import json
import uuid

import pytest
from agent_grid_cli.main import app
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_nudges import NudgeReason, NudgeSource
from agent_grid_runtime.public_queues import resolve_queues
from agent_grid_runtime.public_settings import AwsSettings, QueueSettings
from agent_grid_runtime.public_transport import open_sqs_transport
from typer.testing import CliRunner

pytestmark = pytest.mark.connected


@pytest.fixture
def cli_env(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> dict[str, str]:
    monkeypatch.chdir(str(tmp_path))  # no .env from the developer's checkout
    return {"AGENT_GRID_AWS__ENDPOINT_URL": sqs_endpoint, "AGENT_GRID_QUEUES__PREFIX": f"cli{uuid.uuid4().hex[:10]}"}


def test_nudge_puts_a_valid_nudge_on_the_queue_and_queues_shows_it(cli_env: dict[str, str], sqs_endpoint: str) -> None:
    runner = CliRunner()

    nudged = runner.invoke(app, ["nudge", "octo/widgets#42", "--detail", "please", "--actor", "alice"], env=cli_env)
    listed = runner.invoke(app, ["queues"], env=cli_env)

    assert nudged.exit_code == 0, nudged.output
    assert "nudged octo/widgets#42" in nudged.output
    prefix = cli_env["AGENT_GRID_QUEUES__PREFIX"]
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1:] for line in listed.output.splitlines()[1:]}
    assert rows[f"{prefix}-nudges"] == ["1", "0", "0"]
    assert rows[f"{prefix}-nudges-dlq"] == ["0", "0", "0"]

    async def receive() -> str:
        async with open_sqs_transport(AwsSettings(endpoint_url=sqs_endpoint)) as sqs:
            queues = await resolve_queues(sqs, QueueSettings(prefix=prefix))
            [message] = await sqs.receive(queues.nudges.url, max_messages=1, wait_time_s=1, visibility_timeout_s=30)
            return message.body

    envelope = decode(asyncio.run(receive()))
    assert envelope.body.issue.repo == "octo/widgets"
    assert envelope.body.issue.number == 42
    assert envelope.body.reason is NudgeReason.MANUAL
    assert envelope.body.source is NudgeSource.HUMAN
    assert envelope.body.actor.login == "alice"
    assert envelope.producer == "agent-grid-cli"


def test_nudge_refuses_a_malformed_reference(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["nudge", "octo/widgets"], env=cli_env)

    assert result.exit_code == 1
    assert "expected OWNER/REPO#NUMBER" in result.output


def test_unreachable_broker_is_a_clear_error(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "AGENT_GRID_AWS__ENDPOINT_URL": "http://127.0.0.1:9"}

    result = CliRunner().invoke(app, ["queues"], env=env)

    assert result.exit_code == 1
    assert "broker unreachable at http://127.0.0.1:9" in result.output


def test_validate_accepts_the_readme_example_and_rejects_garbage(cli_env: dict[str, str], tmp_path: object) -> None:
    from pathlib import Path

    good = Path(str(tmp_path)) / "good.json"
    good.write_text(
        json.dumps(
            {
                "message_id": str(uuid.uuid4()),
                "kind": "nudge",
                "body": {"issue": {"repo": "octo/widgets", "number": 42}, "reason": "manual"},
            }
        )
    )
    bad = Path(str(tmp_path)) / "bad.json"
    bad.write_text('{"kind": "nudge"}')

    assert CliRunner().invoke(app, ["validate", str(good)], env=cli_env).exit_code == 0
    rejected = CliRunner().invoke(app, ["validate", str(bad)], env=cli_env)
    assert rejected.exit_code == 1
    assert "message_id: Field required" in rejected.output

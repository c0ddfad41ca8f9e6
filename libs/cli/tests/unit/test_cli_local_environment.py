"""The local grid's settings for each service, without starting anything."""

from pathlib import Path

from agent_grid_cli.local_grid import LOCAL_BOT_TOKEN, coordinator_environment, grid_environment


def test_the_demo_coordinator_signs_its_records_with_a_key_its_agents_do_not_hold() -> None:
    # The demo's agents get the coordinator's GitHub token; a records key derived from it would be theirs too.
    assert grid_environment({}, Path("/tmp/state"))["EXECUTION_GRID_TRACKER_TOKEN"] == LOCAL_BOT_TOKEN
    first, second = coordinator_environment({}), coordinator_environment({})
    secret = first["COORDINATOR_RECORDS__SECRET"]
    assert len(secret) >= 32
    assert secret != LOCAL_BOT_TOKEN
    assert secret != second["COORDINATOR_RECORDS__SECRET"]  # random, not a constant anyone can read here
    # An operator's own secret is kept.
    chosen = {"COORDINATOR_RECORDS__SECRET": "an-operators-own-secret"}
    assert coordinator_environment(chosen)["COORDINATOR_RECORDS__SECRET"] == "an-operators-own-secret"

"""``agent-grid-tools mcp`` driven by the MCP SDK's own client over stdio, against the fake coordinator."""

import json
from pathlib import Path
from typing import Any

from agent_grid_contracts.public_tools import FinishResult, IssueDetail, SubIssuesResult
from mcp import ClientSession
from mcp.types import CallToolResult, TextContent

from .fake_coordinator import RUN_ISSUE, FakeCoordinator
from .tools_process import mcp_session

TOOL_NAMES = {"show_issue", "create_subissues", "comment", "update_workpad", "nudge", "finish"}


async def call(session: ClientSession, name: str, arguments: dict[str, Any]) -> CallToolResult:
    result = await session.call_tool(name, arguments)
    assert isinstance(result, CallToolResult)
    return result


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_lists_the_six_tools_with_typed_input_schemas(tools_env: dict[str, str], tmp_path: Path) -> None:
    async with mcp_session(tools_env, tmp_path / "mcp.log") as session:
        listed = await session.list_tools()

    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
    schemas = {name: tool.input_schema for name, tool in tools.items()}
    assert set(schemas["show_issue"]["properties"]) == {"issue"}
    assert schemas["show_issue"].get("required", []) == []
    assert set(schemas["create_subissues"]["properties"]) == {"issues", "parent"}
    assert schemas["create_subissues"]["required"] == ["issues"]
    assert set(schemas["comment"]["required"]) == {"body"}
    assert set(schemas["update_workpad"]["required"]) == {"body"}
    assert set(schemas["nudge"]["required"]) == {"issue", "reason"}
    finish = schemas["finish"]
    assert set(finish["required"]) == {"outcome", "summary"}
    assert finish["properties"]["outcome"]["enum"] == ["done", "split", "blocked", "handoff"]
    assert finish["properties"]["close_issue"]["type"] == "boolean"
    assert "owner/repo#number" in schemas["nudge"]["properties"]["issue"]["description"]
    assert tools["show_issue"].annotations is not None
    assert tools["show_issue"].annotations.read_only_hint is True


async def test_each_tool_calls_the_coordinator(
    tools_env: dict[str, str], coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    async with mcp_session(tools_env, tmp_path / "mcp.log") as session:
        shown = await call(session, "show_issue", {})
        named = await call(session, "show_issue", {"issue": "octo/widgets#2"})
        created = await call(
            session,
            "create_subissues",
            {"issues": [{"title": "Parse"}, {"title": "Render", "body": "b", "blocked_by": [0]}]},
        )
        commented = await call(session, "comment", {"body": "On it.", "issue": "octo/widgets#2"})
        workpad = await call(session, "update_workpad", {"body": "- [ ] parse"})
        nudged = await call(session, "nudge", {"issue": "octo/widgets#5", "reason": "unblocked"})
        finished = await call(session, "finish", {"outcome": "done", "summary": "Done.", "close_issue": True})

    for result in (shown, named, created, commented, workpad, nudged, finished):
        assert not result.is_error, text_of(result)
    assert IssueDetail.model_validate(shown.structured_content).issue == RUN_ISSUE
    assert IssueDetail.model_validate(named.structured_content).issue == "octo/widgets#2"
    assert [c.title for c in SubIssuesResult.model_validate(created.structured_content).created] == ["Parse", "Render"]
    assert "issuecomment" in commented.structured_content["url"]
    assert workpad.structured_content == {"updated": True}
    assert nudged.structured_content == {"queued": True}
    assert FinishResult.model_validate(finished.structured_content).closed is True
    assert [(c.method, c.path) for c in coordinator.calls] == [
        ("GET", "/tools/v1/issue"),
        ("GET", "/tools/v1/issue"),
        ("POST", "/tools/v1/subissues"),
        ("POST", "/tools/v1/comments"),
        ("PUT", "/tools/v1/workpad"),
        ("POST", "/tools/v1/nudges"),
        ("POST", "/tools/v1/finish"),
    ]
    assert coordinator.calls[1].query == {"issue": "octo/widgets#2"}
    assert coordinator.calls[2].body["issues"][1] == {"title": "Render", "body": "b", "blocked_by": [0]}
    assert coordinator.calls[6].body == {
        "outcome": "done",
        "summary": "Done.",
        "close_issue": True,
        "pull_request": None,
    }
    assert {call.authorization for call in coordinator.calls} == {f"Bearer {tools_env['AGENT_GRID_RUN_TOKEN']}"}


async def test_a_refused_call_is_a_tool_error_with_the_detail_and_the_session_goes_on(
    tools_env: dict[str, str], coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    coordinator.subissue_cap = 1
    async with mcp_session(tools_env, tmp_path / "mcp.log") as session:
        outside = await call(session, "nudge", {"issue": "evil/corp#1", "reason": "why not"})
        capped = await call(session, "create_subissues", {"issues": [{"title": "a"}, {"title": "b"}]})
        after = await call(session, "show_issue", {})

    assert outside.is_error
    text = text_of(outside)
    assert "outside this run's issue tree" in text
    error = json.loads(text.splitlines()[-1])
    assert (error["status"], error["error"]) == (403, "out_of_scope")
    assert capped.is_error
    assert json.loads(text_of(capped).splitlines()[-1])["error"] == "cap_reached"
    assert not after.is_error


async def test_an_unavailable_post_is_a_tool_error_and_not_retried(
    tools_env: dict[str, str], coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    coordinator.fail_next("POST", "/tools/v1/finish")
    coordinator.fail_next("GET", "/tools/v1/issue")
    async with mcp_session(tools_env, tmp_path / "mcp.log") as session:
        finished = await call(session, "finish", {"outcome": "blocked", "summary": "Need a key."})
        shown = await call(session, "show_issue", {})

    assert finished.is_error
    error = json.loads(text_of(finished).splitlines()[-1])
    assert (error["status"], error["error"], error["retry_after_s"]) == (503, "unavailable", 0.01)
    assert len(coordinator.calls_to("POST", "/tools/v1/finish")) == 1
    assert not shown.is_error  # the GET went through on its retry
    assert len(coordinator.calls_to("GET", "/tools/v1/issue")) == 2


async def test_arguments_outside_the_schema_are_a_tool_error(
    tools_env: dict[str, str], coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    async with mcp_session(tools_env, tmp_path / "mcp.log") as session:
        empty = await call(session, "comment", {"body": ""})
        outcome = await call(session, "finish", {"outcome": "maybe", "summary": "?"})

    assert empty.is_error
    assert outcome.is_error
    assert coordinator.calls == []

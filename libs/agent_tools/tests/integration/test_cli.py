"""The ``agent-grid-tools`` console script, run as a process against the fake coordinator over real HTTP."""

import json
from pathlib import Path

import pytest
from agent_grid_contracts.public_tools import (
    CommentResult,
    FinishResult,
    IssueDetail,
    NudgeResult,
    SubIssuesResult,
    WorkpadResult,
)

from .fake_coordinator import RUN_ISSUE, FakeCoordinator
from .tools_process import run_cli


async def test_show_defaults_to_the_runs_issue_and_sends_the_run_token(
    tools_env: dict[str, str], coordinator: FakeCoordinator
) -> None:
    result = await run_cli(tools_env, "show")

    assert result.exit_code == 0, result.stderr
    detail = IssueDetail.model_validate(result.json())
    assert detail.issue == RUN_ISSUE
    assert detail.comments[0].trusted is False
    [call] = coordinator.calls
    assert (call.method, call.path, call.query) == ("GET", "/tools/v1/issue", {})
    assert call.authorization == f"Bearer {tools_env['AGENT_GRID_RUN_TOKEN']}"


async def test_show_names_an_issue_in_the_query(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    result = await run_cli(tools_env, "show", "octo/widgets#7")

    assert result.exit_code == 0, result.stderr
    assert IssueDetail.model_validate(result.json()).issue == "octo/widgets#7"
    assert coordinator.calls[0].query == {"issue": "octo/widgets#7"}


async def test_create_subissues_from_a_json_file(
    tools_env: dict[str, str], coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"title": "Parse"}, {"title": "Render", "body": "after parse", "blocked_by": [0]}]))

    result = await run_cli(tools_env, "create-subissues", "--parent", "octo/widgets#3", "--json", str(plan))

    assert result.exit_code == 0, result.stderr
    created = SubIssuesResult.model_validate(result.json()).created
    assert [card.title for card in created] == ["Parse", "Render"]
    [call] = coordinator.calls_to("POST", "/tools/v1/subissues")
    assert call.body == {
        "parent": "octo/widgets#3",
        "issues": [
            {"title": "Parse", "body": "", "blocked_by": []},
            {"title": "Render", "body": "after parse", "blocked_by": [0]},
        ],
    }


async def test_create_subissues_reads_json_from_stdin(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    result = await run_cli(tools_env, "create-subissues", "--json", "-", stdin='[{"title": "Only one"}]')

    assert result.exit_code == 0, result.stderr
    assert [card.title for card in SubIssuesResult.model_validate(result.json()).created] == ["Only one"]
    assert coordinator.calls_to("POST", "/tools/v1/subissues")[0].body["parent"] is None


async def test_create_subissues_with_repeated_titles(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    result = await run_cli(
        tools_env,
        "create-subissues",
        "--title",
        "Parse",
        "--body",
        "the parser",
        "--title",
        "Render",
        "--body",
        "-",
        "--blocked-by",
        "0",
        "--title",
        "Ship",
        stdin="renders the parse tree\n",
    )

    assert result.exit_code == 0, result.stderr
    assert len(SubIssuesResult.model_validate(result.json()).created) == 3
    [call] = coordinator.calls_to("POST", "/tools/v1/subissues")
    assert call.body["issues"] == [
        {"title": "Parse", "body": "the parser", "blocked_by": []},
        {"title": "Render", "body": "renders the parse tree", "blocked_by": [0]},
        {"title": "Ship", "body": "", "blocked_by": []},
    ]


async def test_comment_on_a_named_issue_and_from_stdin(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    named = await run_cli(tools_env, "comment", "--issue", "octo/widgets#2", "Looks done.")
    piped = await run_cli(tools_env, "comment", "-", stdin="Line one\nLine two\n")

    assert named.exit_code == 0, named.stderr
    assert piped.exit_code == 0, piped.stderr
    assert "/issues/2#issuecomment-" in CommentResult.model_validate(named.json()).url
    bodies = [call.body for call in coordinator.calls_to("POST", "/tools/v1/comments")]
    assert bodies == [
        {"issue": "octo/widgets#2", "body": "Looks done."},
        {"issue": None, "body": "Line one\nLine two"},  # the contract strips surrounding whitespace
    ]


async def test_workpad_replaces_and_reports_no_change_for_the_same_body(
    tools_env: dict[str, str], coordinator: FakeCoordinator
) -> None:
    first = await run_cli(tools_env, "workpad", "- [x] parse\n- [ ] render")
    same = await run_cli(tools_env, "workpad", "-", stdin="- [x] parse\n- [ ] render")

    assert first.exit_code == 0, first.stderr
    assert same.exit_code == 0, same.stderr
    assert WorkpadResult.model_validate(first.json()).updated is True
    assert WorkpadResult.model_validate(same.json()).updated is False
    assert [call.method for call in coordinator.calls] == ["PUT", "PUT"]
    assert coordinator.workpads == {RUN_ISSUE: "- [x] parse\n- [ ] render"}


async def test_nudge(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    result = await run_cli(tools_env, "nudge", "octo/widgets#5", "--reason", "its blocker is closed")

    assert result.exit_code == 0, result.stderr
    assert NudgeResult.model_validate(result.json()).queued is True
    [call] = coordinator.calls_to("POST", "/tools/v1/nudges")
    assert call.body == {"issue": "octo/widgets#5", "reason": "its blocker is closed"}


async def test_finish_done_with_close_and_pr(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    pr = "https://github.com/octo/widgets/pull/9"
    result = await run_cli(tools_env, "finish", "done", "--summary", "Faster widgets.", "--close", "--pr", pr)

    assert result.exit_code == 0, result.stderr
    assert FinishResult.model_validate(result.json()) == FinishResult(recorded=True, closed=True)
    [call] = coordinator.calls_to("POST", "/tools/v1/finish")
    assert call.body == {"outcome": "done", "summary": "Faster widgets.", "close_issue": True, "pull_request": pr}


async def test_finish_blocked_reads_the_summary_from_stdin(
    tools_env: dict[str, str], coordinator: FakeCoordinator
) -> None:
    result = await run_cli(tools_env, "finish", "blocked", "--summary", "-", stdin="Need the API key.")

    assert result.exit_code == 0, result.stderr
    assert FinishResult.model_validate(result.json()).labelled == ("agent:blocked",)
    assert coordinator.calls_to("POST", "/tools/v1/finish")[0].body["close_issue"] is False


async def test_a_bad_token_is_refused_with_exit_3(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    forged = tools_env["AGENT_GRID_RUN_TOKEN"][:-4] + "AAAA"

    result = await run_cli({**tools_env, "AGENT_GRID_RUN_TOKEN": forged}, "show")

    assert result.exit_code == 3
    assert result.stdout == ""
    error = result.error()
    assert (error["status"], error["error"]) == (401, "unauthorized")
    assert "signature" in error["detail"]
    assert len(coordinator.calls) == 1  # a 401 is not retried


async def test_an_issue_outside_the_tree_is_refused_with_exit_3(
    tools_env: dict[str, str], coordinator: FakeCoordinator
) -> None:
    result = await run_cli(tools_env, "nudge", "evil/corp#1", "--reason", "why not")

    assert result.exit_code == 3
    error = result.error()
    assert (error["status"], error["error"]) == (403, "out_of_scope")
    assert "outside this run's issue tree" in error["detail"]


async def test_a_fan_out_cap_is_refused_with_exit_3(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    titles = [arg for n in range(coordinator.subissue_cap + 1) for arg in ("--title", f"part {n}")]

    result = await run_cli(tools_env, "create-subissues", *titles)

    assert result.exit_code == 3
    error = result.error()
    assert (error["status"], error["error"]) == (409, "cap_reached")
    assert "max_children" in error["detail"]
    assert coordinator.created == 0


async def test_show_is_retried_through_503s(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    coordinator.fail_next("GET", "/tools/v1/issue", times=2)

    result = await run_cli(tools_env, "show")

    assert result.exit_code == 0, result.stderr
    assert len(coordinator.calls_to("GET", "/tools/v1/issue")) == 3


async def test_show_gives_up_after_capped_retries_with_exit_4(
    tools_env: dict[str, str], coordinator: FakeCoordinator
) -> None:
    coordinator.fail_next("GET", "/tools/v1/issue", times=10)

    result = await run_cli(tools_env, "show")

    assert result.exit_code == 4
    error = result.error()
    assert (error["status"], error["error"], error["retry_after_s"]) == (503, "unavailable", 0.01)
    assert len(coordinator.calls_to("GET", "/tools/v1/issue")) == 4


async def test_workpad_is_retried_through_a_503(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    coordinator.fail_next("PUT", "/tools/v1/workpad")

    result = await run_cli(tools_env, "workpad", "progress")

    assert result.exit_code == 0, result.stderr
    assert len(coordinator.calls_to("PUT", "/tools/v1/workpad")) == 2


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("comment", "hello"), "/tools/v1/comments"),
        (("create-subissues", "--title", "one"), "/tools/v1/subissues"),
        (("nudge", "octo/widgets#5", "--reason", "unblocked"), "/tools/v1/nudges"),
        (("finish", "split", "--summary", "split in two"), "/tools/v1/finish"),
    ],
)
async def test_posts_are_not_retried_on_503(
    tools_env: dict[str, str], coordinator: FakeCoordinator, args: tuple[str, ...], path: str
) -> None:
    coordinator.fail_next("POST", path)

    result = await run_cli(tools_env, *args)

    assert result.exit_code == 4
    assert result.error()["error"] == "unavailable"
    assert len(coordinator.calls_to("POST", path)) == 1


async def test_an_unreachable_coordinator_is_exit_4(tools_env: dict[str, str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused at once.
    result = await run_cli({**tools_env, "AGENT_GRID_TOOLS_URL": "http://127.0.0.1:9"}, "comment", "hello")

    assert result.exit_code == 4
    error = result.error()
    assert (error["status"], error["error"]) == (None, "unavailable")
    assert "could not reach the coordinator" in error["detail"]


async def test_outside_a_run_is_a_usage_error(tools_env: dict[str, str], coordinator: FakeCoordinator) -> None:
    env = {name: value for name, value in tools_env.items() if name != "AGENT_GRID_RUN_TOKEN"}

    result = await run_cli(env, "show")

    assert result.exit_code == 2
    error = result.error()
    assert error["error"] == "not_configured"
    assert "AGENT_GRID_RUN_TOKEN" in error["detail"]
    assert coordinator.calls == []


@pytest.mark.parametrize(
    ("args", "stdin", "expected_error", "expected_detail"),
    [
        (("nudge", "octo/widgets#5"), None, "usage", "--reason"),
        (("finish", "maybe", "--summary", "x"), None, "usage", "invalid choice"),
        (("create-subissues",), None, "usage", "nothing to create"),
        (("create-subissues", "--body", "orphan"), None, "usage", "must follow the --title"),
        (("create-subissues", "--json", "-"), "{not json", "usage", "is not JSON"),
        (("create-subissues", "--json", "-"), '{"title": "x"}', "usage", "JSON list of objects"),
        (("create-subissues", "--json", "/nonexistent/plan.json"), None, "usage", "cannot read"),
        (("create-subissues", "--title", ""), None, "invalid", "title"),
        (("comment", "-"), "", "invalid", "body"),
    ],
)
async def test_usage_errors_exit_2_without_calling_the_coordinator(
    tools_env: dict[str, str],
    coordinator: FakeCoordinator,
    args: tuple[str, ...],
    stdin: str | None,
    expected_error: str,
    expected_detail: str,
) -> None:
    result = await run_cli(tools_env, *args, stdin=stdin)

    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    error = result.error()
    assert error["error"] == expected_error
    assert expected_detail in error["detail"]
    assert coordinator.calls == []


async def test_help_is_written_for_agents(tools_env: dict[str, str]) -> None:
    result = await run_cli(tools_env, "--help")

    assert result.exit_code == 0
    for command in ("show", "create-subissues", "comment", "workpad", "nudge", "finish", "mcp"):
        assert command in result.stdout
    assert "exit 3" in result.stdout
    assert "AGENT_GRID_RUN_TOKEN" in result.stdout

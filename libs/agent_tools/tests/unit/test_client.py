"""ToolsClient's edges that a well-behaved server never shows: lost connections, foreign error bodies, bad answers."""

import httpx
import pytest
from agent_grid_contracts.public_tools import NewSubIssue, ToolError
from agent_grid_tools.public_client import RetryPolicy, ToolCallError, ToolsClient, ToolsConfigError
from pydantic import ValidationError

FAST = RetryPolicy(max_attempts=3, initial_delay_s=0.001, max_delay_s=0.01)
DETAIL = {
    "issue": "octo/widgets#1",
    "title": "t",
    "body": "",
    "author": "alice",
    "author_trusted": True,
    "state": "open",
    "url": "https://github.com/octo/widgets/issues/1",
}


def client_over(handler: httpx.MockTransport) -> ToolsClient:
    return ToolsClient("http://coordinator.test/", "agr1.run.1.sig", retry=FAST, transport=handler)


async def test_idempotent_calls_retry_lost_connections_until_an_answer() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=DETAIL)

    async with client_over(httpx.MockTransport(handle)) as client:
        detail = await client.show("octo/widgets#1")

    assert detail.issue == "octo/widgets#1"
    assert len(seen) == 3
    assert str(seen[0].url) == "http://coordinator.test/tools/v1/issue?issue=octo%2Fwidgets%231"
    assert seen[0].headers["authorization"] == "Bearer agr1.run.1.sig"


async def test_idempotent_calls_give_up_after_max_attempts() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ToolCallError) as raised:
            await client.update_workpad("progress")

    assert len(seen) == FAST.max_attempts
    assert raised.value.status is None
    assert not raised.value.refused
    assert raised.value.error.error == "unavailable"
    assert raised.value.error.detail.startswith("timed out at http://coordinator.test/tools/v1")


async def test_posts_never_retry_a_lost_connection() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ToolCallError, match=r"^POST /tools/v1/subissues failed \(unavailable\)"):
            await client.create_subissues([NewSubIssue(title="one")])

    assert len(seen) == 1


async def test_an_error_without_a_tool_error_body_is_named_after_its_status() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="<html>Forbidden by proxy</html>")

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ToolCallError) as raised:
            await client.nudge("octo/widgets#2", "why")

    assert raised.value.refused
    assert raised.value.error == ToolError(error="forbidden", detail="<html>Forbidden by proxy</html>")
    assert str(raised.value) == "POST /tools/v1/nudges refused (403 forbidden): <html>Forbidden by proxy</html>"


async def test_a_proxys_503_is_retried_honouring_retry_after() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, headers={"Retry-After": "0"}, text="")

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ToolCallError) as raised:
            await client.show()

    assert len(seen) == FAST.max_attempts
    assert raised.value.status == 503
    assert raised.value.error.retry_after_s == 0
    assert str(raised.value).startswith("GET /tools/v1/issue failed (503 unavailable)")


async def test_an_answer_that_breaks_the_contract_is_a_bad_response() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ToolCallError) as raised:
            await client.comment("hello")

    assert raised.value.status == 200
    assert not raised.value.refused
    assert raised.value.error.error == "bad_response"
    assert "CommentResult" in raised.value.error.detail


async def test_requests_break_the_contract_before_anything_is_sent() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    async with client_over(httpx.MockTransport(handle)) as client:
        with pytest.raises(ValidationError):
            await client.create_subissues([])
        with pytest.raises(ValidationError):
            await client.comment("   ")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "AGENT_GRID_TOOLS_URL and AGENT_GRID_RUN_TOKEN not set"),
        ({"AGENT_GRID_TOOLS_URL": "http://x", "AGENT_GRID_RUN_TOKEN": " "}, "AGENT_GRID_RUN_TOKEN not set"),
        ({"AGENT_GRID_TOOLS_URL": "x:8002", "AGENT_GRID_RUN_TOKEN": "t"}, "must be an http(s) URL"),
    ],
)
def test_from_environment_names_what_is_missing(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ToolsConfigError) as raised:
        ToolsClient.from_environment(environ)

    assert message in str(raised.value)


def test_retry_delays_grow_to_the_cap_and_follow_the_server() -> None:
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0)

    assert 0.5 <= policy.delay_s(0, None) <= 1.0
    assert 2.0 <= policy.delay_s(5, None) <= 4.0
    assert policy.delay_s(0, 2.5) == 2.5
    assert policy.delay_s(0, 60.0) == 4.0

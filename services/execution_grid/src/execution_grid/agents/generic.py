"""Any executable, speaking an optional two-message protocol of agent-grid's own.

The command is ``request.executable`` followed by ``request.extra_args``; the prompt arrives on stdin. A
program has no flag the grid could know for the model or the limits, so they travel in the environment when
set: ``AGENT_GRID_MODEL``, ``AGENT_GRID_MAX_TURNS``, ``AGENT_GRID_MAX_COST_USD`` (the worker adds the run's
own ``AGENT_GRID_*`` variables: run id, mode, prompt file, wind-down file...).

A stdout line holding a JSON object
- ``{"type": "agent_grid.usage", "input_tokens": 1200, "output_tokens": 80, "cost_usd": 0.01, ...}``
  reports cumulative usage (any ``Usage`` field; absent fields are zero; a line with an invalid field is
  ignored whole);
- ``{"type": "agent_grid.result", "success": true, "summary": "..."}`` reports how the run ended
  (optional ``budget_exhausted`` and ``detail``).
Without a result line the summary is the last non-empty output line.

``AgentRequest.tools_command`` is not used: a program of the operator's has no MCP configuration the grid could
know. It reaches the agent-grid tools through the ``agent-grid-tools`` CLI (or by starting ``agent-grid-tools
mcp`` itself), which read the run's ``AGENT_GRID_TOOLS_URL`` and ``AGENT_GRID_RUN_TOKEN``.
"""

import signal

from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.jsonlines import (
    JsonObject,
    amount_at,
    clip_head,
    count_at,
    flag_at,
    format_amount,
    parse_object,
    text_at,
)
from execution_grid.agents.public_agents import AgentCommand, AgentRequest, ReportedEnd

USAGE_EVENT = "agent_grid.usage"
RESULT_EVENT = "agent_grid.result"
_COUNT_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "turns")


def _usage_from(event: JsonObject) -> Usage | None:
    counts: dict[str, int] = {}
    for name in _COUNT_FIELDS:
        if name in event:
            value = count_at(event, name)
            if value is None:
                return None
            counts[name] = value
    cost = 0.0
    if "cost_usd" in event:
        amount = amount_at(event, "cost_usd")
        if amount is None:
            return None
        cost = amount
    return Usage(
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cache_read_tokens=counts.get("cache_read_tokens", 0),
        cache_write_tokens=counts.get("cache_write_tokens", 0),
        turns=counts.get("turns", 0),
        cost_usd=cost,
        reported=True,
    )


class GenericReader:
    """Reads the optional ``agent_grid.*`` protocol lines; everything else only feeds the summary."""

    def __init__(self) -> None:
        self._usage = Usage()
        self._end: ReportedEnd | None = None
        self._result_summary = ""
        self._last_line = ""

    def feed(self, line: str) -> None:
        event = parse_object(line)
        kind = text_at(event, "type") if event is not None else ""
        if event is not None and kind == USAGE_EVENT:
            usage = _usage_from(event)
            if usage is not None:
                self._usage = usage
        elif event is not None and kind == RESULT_EVENT:
            self._on_result(event)
        elif line.strip():
            self._last_line = line.strip()

    def _on_result(self, event: JsonObject) -> None:
        success = flag_at(event, "success")
        if success is None:
            return
        self._end = ReportedEnd(
            success=success,
            budget_exhausted=flag_at(event, "budget_exhausted") or False,
            detail=text_at(event, "detail"),
        )
        self._result_summary = text_at(event, "summary")

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def summary(self) -> str:
        return clip_head(self._result_summary if self._result_summary.strip() else self._last_line)

    @property
    def reported_end(self) -> ReportedEnd | None:
        return self._end


class GenericAdapter:
    """A command of the operator's choosing."""

    @property
    def kind(self) -> str:
        return "generic"

    @property
    def api_key_env(self) -> str | None:
        # Which key, if any, an arbitrary program needs is unknowable here: it gets none.
        return None

    @property
    def wind_down_signal(self) -> int | None:
        # Programs written for the grid can trap SIGUSR1 to checkpoint; the wind-down file works as well.
        return int(signal.SIGUSR1)

    def command(self, request: AgentRequest) -> AgentCommand:
        if not request.executable:
            raise ValueError(
                "the generic agent kind needs request.executable: the program to run (a path or a name on PATH)"
            )
        env: dict[str, str] = {}
        if request.model:
            env["AGENT_GRID_MODEL"] = request.model
        if request.limits.max_turns is not None:
            env["AGENT_GRID_MAX_TURNS"] = str(request.limits.max_turns)
        if request.limits.max_cost_usd is not None:
            env["AGENT_GRID_MAX_COST_USD"] = format_amount(request.limits.max_cost_usd)
        return AgentCommand(argv=(request.executable, *request.extra_args), stdin=request.prompt.encode(), env=env)

    def reader(self) -> GenericReader:
        return GenericReader()

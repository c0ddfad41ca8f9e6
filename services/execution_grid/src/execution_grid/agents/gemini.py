"""Google Gemini CLI (``gemini``) in headless mode with ``--output-format stream-json``.

Written against gemini-cli 0.56 (docs/cli/headless.md, docs/cli/cli-reference.md, packages/core/src/output).
Headless mode starts whenever stdin or stdout is not a terminal; the prompt is read from stdin (at most
8 MB). ``--approval-mode yolo`` auto-approves every tool (``--yolo`` is its deprecated spelling). Since
April 2026 a headless run in an untrusted folder exits with ``FatalUntrustedWorkspaceError`` and a trusted
folder is needed for any approval mode but "default", so the workspace is trusted for the session through
``GEMINI_CLI_TRUST_WORKSPACE`` (the env var, unlike ``--skip-trust``, is harmless to older releases). The
CLI has no turn or spending flag: ``maxSessionTurns`` lives in settings.json, so the grid enforces limits.

The agent-grid tools (``AgentRequest.tools_command``): the CLI has no flag that adds an MCP server, so the server
goes into the user settings file, ``~/.gemini/settings.json`` (docs/tools/mcp-server.md), under the run's
private home (``home`` next to the prompt, the HOME the worker gives the run; ``GEMINI_CLI_HOME`` names it as
well, as the CLI prefers that variable to HOME). Its ``env`` passes ``AGENT_GRID_TOOLS_URL`` and
``AGENT_GRID_RUN_TOKEN`` on as ``${NAME}`` references, expanded from the CLI's own environment when the server
starts, because the CLI strips variables whose names look secret (``*TOKEN*``) from an MCP server's
environment; ``trust`` skips confirmations. ``--allowed-mcp-server-names agent-grid`` connects that server
only: a repository's ``.gemini/settings.json`` is trusted with the workspace and could otherwise add its own.
Stdio servers need a trusted folder, which ``GEMINI_CLI_TRUST_WORKSPACE`` already makes the workspace.

Output (``stream-json``, since 0.11): ``init``, ``message`` (user, then assistant text as ``delta`` chunks),
``tool_use``, ``tool_result``, ``error`` (severity warning|error) and one final ``result`` with ``status``
success|error, an optional ``error`` {type, message} and ``stats`` (session totals: total_tokens,
input_tokens, output_tokens, cached, input, duration_ms, tool_calls, per-model breakdown). No cost.
"""

from pathlib import Path

from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.jsonlines import JsonObject, clip_head, count_at, object_at, parse_object, text_at
from execution_grid.agents.mcp_config import FORWARDED_ENV, SERVER_NAME, read_json_object, split_command, write_json
from execution_grid.agents.public_agents import AgentCommand, AgentRequest, ReportedEnd

# FatalTurnLimitedError (exit 53) and MaxSessionTurnsError are how the CLI names a stop on its turn limit;
# a model-side session limit arrives as an error event saying "Maximum session turns exceeded".
_TURN_LIMIT_ERROR_TYPES = frozenset({"FatalTurnLimitedError", "MaxSessionTurnsError"})
_TURN_LIMIT_PHRASES = ("max session turns", "maximum session turns")
_DETAIL_MAX_CHARS = 1000


def _is_turn_limit(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in _TURN_LIMIT_PHRASES)


class GeminiReader:
    """Reads ``stream-json`` events; the ``result`` event's ``stats`` are the session's totals."""

    def __init__(self) -> None:
        self._stats: JsonObject | None = None
        self._result: JsonObject | None = None
        self._turns = 0
        self._in_turn = False
        self._segments: list[str] = []
        self._turn_limit_hit = False
        self._last_error = ""

    def feed(self, line: str) -> None:
        event = parse_object(line)
        if event is None:
            return
        kind = text_at(event, "type")
        if kind == "message":
            self._on_message(event)
        elif kind == "tool_use":
            self._start_turn()
        elif kind == "tool_result":
            # Tool results go back to the model: whatever it says next belongs to a new turn.
            self._in_turn = False
        elif kind == "error" and text_at(event, "severity") == "error":
            self._last_error = text_at(event, "message")
            if _is_turn_limit(self._last_error):
                self._turn_limit_hit = True
        elif kind == "result":
            self._result = event
            stats = object_at(event, "stats")
            if stats:
                self._stats = stats

    def _on_message(self, event: JsonObject) -> None:
        if text_at(event, "role") != "assistant":
            self._in_turn = False
            return
        if not self._in_turn:
            self._start_turn()
        self._segments[-1] += text_at(event, "content")

    def _start_turn(self) -> None:
        # The CLI loops model request -> tool calls -> tool results; each request is one turn.
        if not self._in_turn:
            self._turns += 1
            self._in_turn = True
            self._segments.append("")

    @property
    def usage(self) -> Usage:
        stats = self._stats
        if stats is None:
            return Usage(turns=self._turns)
        prompt = count_at(stats, "input_tokens") or 0
        cached = min(count_at(stats, "cached") or 0, prompt)
        fresh = count_at(stats, "input")
        total = count_at(stats, "total_tokens") or 0
        # total_tokens also counts thinking (billed as output) and tool-use prompt tokens, which the
        # output_tokens field leaves out: book everything that is not prompt as output so nothing is lost.
        output = max(count_at(stats, "output_tokens") or 0, total - prompt)
        return Usage(
            input_tokens=prompt - cached if fresh is None else min(fresh, prompt),
            cache_read_tokens=cached,
            output_tokens=output,
            turns=self._turns,
            reported=True,
        )

    @property
    def summary(self) -> str:
        for segment in reversed(self._segments):
            if segment.strip():
                return clip_head(segment)
        return ""

    @property
    def reported_end(self) -> ReportedEnd | None:
        result = self._result
        if result is None:
            return None
        error = object_at(result, "error")
        message = text_at(error, "message")
        limited = self._turn_limit_hit or text_at(error, "type") in _TURN_LIMIT_ERROR_TYPES or _is_turn_limit(message)
        if text_at(result, "status") == "success" and not limited:
            return ReportedEnd(success=True)
        detail = message or self._last_error or text_at(result, "status") or "error result"
        return ReportedEnd(success=False, budget_exhausted=limited, detail=detail[:_DETAIL_MAX_CHARS])


def _register_tools_server(home: Path, tools_command: tuple[str, ...]) -> None:
    command, args = split_command(tools_command)
    settings_file = home / ".gemini" / "settings.json"
    # The home is the run's own, so the file is normally absent; a resumed run's is kept and only our entry set.
    settings = read_json_object(settings_file)
    servers = settings.get("mcpServers")
    servers = dict(servers) if isinstance(servers, dict) else {}
    servers[SERVER_NAME] = {
        "command": command,
        "args": args,
        "env": {name: f"${{{name}}}" for name in FORWARDED_ENV},
        "trust": True,
    }
    settings["mcpServers"] = servers
    write_json(settings_file, settings)


class GeminiAdapter:
    """Gemini CLI, unattended: every tool auto-approved in the (trusted) workspace."""

    @property
    def kind(self) -> str:
        return "gemini"

    @property
    def api_key_env(self) -> str | None:
        return "GEMINI_API_KEY"

    @property
    def wind_down_signal(self) -> int | None:
        # A Node program: SIGUSR1 opens the inspector and checkpoints nothing.
        return None

    def command(self, request: AgentRequest) -> AgentCommand:
        argv = [request.executable or "gemini", "--output-format", "stream-json", "--approval-mode", "yolo"]
        env = {"GEMINI_CLI_TRUST_WORKSPACE": "true"}
        if request.tools_command is not None:
            home = request.prompt_file.parent / "home"
            _register_tools_server(home, request.tools_command)
            argv += ["--allowed-mcp-server-names", SERVER_NAME]
            env["GEMINI_CLI_HOME"] = str(home)
        if request.model:
            argv += ["--model", request.model]
        argv += request.extra_args
        return AgentCommand(argv=tuple(argv), stdin=request.prompt.encode(), env=env)

    def reader(self) -> GeminiReader:
        return GeminiReader()

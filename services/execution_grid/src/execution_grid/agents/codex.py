"""OpenAI Codex CLI (``codex exec``) with ``--json``.

Flags (codex-rs/exec/src/cli.rs, docs/exec.md): ``exec`` never asks for approvals (its approval policy is
hard-wired to "never"); ``--sandbox workspace-write`` lets it edit only the workspace (plus temp dirs), and
the ``sandbox_workspace_write.network_access`` override (the TypeScript SDK's ``networkAccessEnabled``)
gives its commands the network they need for git and the grid's agent tools; ``--cd`` names the working
root; ``--skip-git-repo-check`` because the grid, not Codex, guards the workspace; a trailing ``-`` forces
the prompt to be read from stdin. Codex has no turn or spending limit of its own: the grid enforces those.

The agent-grid tools (``AgentRequest.tools_command``): ``exec`` reads no MCP file of ours, but ``--config`` sets
any ``config.toml`` key for the run (a dotted path split on ``.``, the value parsed as TOML), so the server is
the ``mcp_servers.agent-grid`` table (codex-rs/config/src/mcp_types.rs): ``command``, ``args``; ``env_vars``
names the variables to pass on, as Codex starts MCP servers with only HOME, PATH, LANG and a few others;
``default_tools_approval_mode = "approve"``, as ``exec`` (approval policy "never") otherwise declines calls
to MCP tools whose annotations do not mark them read-only ("user cancelled MCP tool call", openai/codex#16685);
``tool_timeout_sec``, as creating a long list of sub-issues on the tracker can outlast the 60 s default.

Output: JSONL ``thread.started``, ``turn.started``, ``item.started|updated|completed`` (items typed
``agent_message``, ``reasoning``, ``command_execution``, ``file_change``, ...), ``turn.completed`` with
``usage`` {input_tokens, cached_input_tokens, output_tokens}, ``turn.failed`` with ``error.message``, and
``error`` (also emitted for retried stream errors, so it does not end the run by itself). No cost.
"""

from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.jsonlines import JsonObject, clip_head, count_at, object_at, parse_object, text_at
from execution_grid.agents.mcp_config import FORWARDED_ENV, SERVER_NAME, split_command, toml_array, toml_string
from execution_grid.agents.public_agents import AgentCommand, AgentRequest, ReportedEnd

_DETAIL_MAX_CHARS = 1000
_TOOL_TIMEOUT_S = 300


class CodexReader:
    """Reads ``codex exec --json`` events."""

    def __init__(self) -> None:
        self._usage: JsonObject | None = None
        self._turns = 0
        self._last_message = ""
        self._end: ReportedEnd | None = None
        self._last_error = ""

    def feed(self, line: str) -> None:
        event = parse_object(line)
        if event is None:
            return
        kind = text_at(event, "type")
        if kind == "turn.completed":
            self._turns += 1
            usage = object_at(event, "usage")
            if usage:
                self._usage = usage
            self._end = ReportedEnd(success=True)
        elif kind == "turn.failed":
            self._turns += 1
            message = text_at(object_at(event, "error"), "message") or self._last_error or "turn failed"
            self._end = ReportedEnd(success=False, detail=message[:_DETAIL_MAX_CHARS])
        elif kind == "error":
            self._last_error = text_at(event, "message")
        elif kind == "item.completed":
            item = object_at(event, "item")
            if text_at(item, "type") == "agent_message" and text_at(item, "text").strip():
                self._last_message = text_at(item, "text")

    @property
    def usage(self) -> Usage:
        if self._usage is None:
            return Usage(turns=self._turns)
        # turn.completed carries the thread's running total (exec reads ThreadTokenUsage.total), not the turn's
        # own share, so the latest report is the cumulative figure: summing would double count.
        # OpenAI counts cached input inside input_tokens; Usage keeps the two apart.
        input_tokens = count_at(self._usage, "input_tokens") or 0
        cached = min(count_at(self._usage, "cached_input_tokens") or 0, input_tokens)
        return Usage(
            input_tokens=input_tokens - cached,
            cache_read_tokens=cached,
            output_tokens=count_at(self._usage, "output_tokens") or 0,
            turns=self._turns,
            reported=True,
        )

    @property
    def summary(self) -> str:
        return clip_head(self._last_message)

    @property
    def reported_end(self) -> ReportedEnd | None:
        if self._end is None and self._last_error:
            # The stream ended on an error without closing its turn (e.g. it could not start one).
            return ReportedEnd(success=False, detail=self._last_error[:_DETAIL_MAX_CHARS])
        return self._end


def _tools_server_overrides(tools_command: tuple[str, ...]) -> list[str]:
    command, args = split_command(tools_command)
    table = f"mcp_servers.{SERVER_NAME}"
    settings = [
        f"command={toml_string(command)}",
        f"args={toml_array(args)}",
        f"env_vars={toml_array(FORWARDED_ENV)}",
        'default_tools_approval_mode="approve"',
        f"tool_timeout_sec={_TOOL_TIMEOUT_S}",
    ]
    return [part for setting in settings for part in ("--config", f"{table}.{setting}")]


class CodexAdapter:
    """Codex CLI, unattended, confined to the workspace for writes."""

    @property
    def kind(self) -> str:
        return "codex"

    @property
    def api_key_env(self) -> str | None:
        # docs/exec.md: CODEX_API_KEY overrides the stored login for `codex exec` (and only there); the
        # TypeScript SDK passes its apiKey the same way.
        return "CODEX_API_KEY"

    @property
    def wind_down_signal(self) -> int | None:
        # The npm-installed `codex` is a Node launcher (SIGUSR1 opens its inspector) and the Rust binary has
        # no handler for it (the default action kills it); only SIGINT is handled, and it aborts the turn.
        return None

    def command(self, request: AgentRequest) -> AgentCommand:
        argv = [request.executable or "codex", "exec", "--json", "--cd", str(request.workspace)]
        argv += ["--skip-git-repo-check", "--sandbox", "workspace-write"]
        argv += ["--config", "sandbox_workspace_write.network_access=true"]
        if request.tools_command is not None:
            argv += _tools_server_overrides(request.tools_command)
        if request.model:
            argv += ["--model", request.model]
        # Operators can swap the sandbox for --dangerously-bypass-approvals-and-sandbox here when the host
        # cannot run Codex's own sandbox (it wins over --sandbox) and is itself the sandbox.
        argv += request.extra_args
        argv.append("-")
        return AgentCommand(argv=tuple(argv), stdin=request.prompt.encode())

    def reader(self) -> CodexReader:
        return CodexReader()

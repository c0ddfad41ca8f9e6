"""Claude Code's ``--output-format stream-json``, written by the stand-in agents (scripted and demo).

The shapes follow what Claude Code prints (the recorded samples in ``tests/unit/agents/samples``): one
``system``/``init`` line, an ``assistant`` line per model call carrying that call's own usage, and a final
``result`` line with the totals and the cost. Standard library only: the stand-ins start hundreds of times.
"""

import json
import os
import sys
import time

USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "turns")
MODEL = "claude-sonnet-4-5-20250929"
_TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "TodoWrite"]


class LineOutput:
    """Line output that is flushed at once (the grid judges stalls by output) and survives a closed pipe."""

    def __init__(self) -> None:
        self.stdout_open = True

    def line(self, text: str) -> None:
        self.raw((text + "\n").encode())

    def raw(self, data: bytes) -> None:
        if not self.stdout_open:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader went away; keep running like an agent that does not notice, but don't let the
            # interpreter complain about the unflushed buffer at exit.
            self.stdout_open = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def json(self, value: dict[str, object], compact: bool = False) -> None:
        self.line(json.dumps(value, separators=(",", ":")) if compact else json.dumps(value))

    def error(self, text: str) -> None:
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except BrokenPipeError:
            pass


def new_id() -> str:
    """A random UUID-4-shaped string (the uuid module costs a few milliseconds to import)."""
    digits = bytearray(os.urandom(16))
    digits[6] = (digits[6] & 0x0F) | 0x40
    digits[8] = (digits[8] & 0x3F) | 0x80
    text = digits.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def zero_usage() -> dict[str, float]:
    """Usage with every field at zero."""
    return dict.fromkeys(USAGE_FIELDS, 0.0)


class ClaudeStream:
    """Writes one session's stream-json: ``init``, then ``assistant`` lines, then one ``result``.

    Usage is given cumulatively; each assistant line carries the difference since the previous one, as
    Claude Code reports each API call's own usage.
    """

    def __init__(self, output: LineOutput) -> None:
        self.out = output
        self.session_id = new_id()
        self.started = time.monotonic()
        self.reported = zero_usage()
        self.messages = 0

    def init(self, mcp_servers: list[dict[str, str]] | None = None) -> None:
        self.out.json(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": _TOOLS,
                "mcp_servers": mcp_servers or [],
                "model": MODEL,
                "permissionMode": "bypassPermissions",
                "slash_commands": [],
                "apiKeySource": "none",
                "output_style": "default",
                "uuid": new_id(),
            },
            compact=True,
        )

    def assistant(self, text: str, usage: dict[str, float], final: bool = False) -> None:
        """One model call's message; ``usage`` is the session's cumulative usage after it."""
        delta = {name: usage[name] - self.reported[name] for name in USAGE_FIELDS}
        self.reported = dict(usage)
        self.messages += 1
        self.out.json(
            {
                "type": "assistant",
                "message": {
                    "id": "msg_" + new_id().replace("-", "")[:24],
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn" if final else None,
                    "stop_sequence": None,
                    "usage": {**claude_tokens(delta), "service_tier": "standard"},
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": new_id(),
            },
            compact=True,
        )

    def result(self, success: bool, summary: str, usage: dict[str, float], turns: int | None = None) -> None:
        """The final line: the totals, the cost and the summary."""
        duration_ms = int((time.monotonic() - self.started) * 1000)
        result: dict[str, object] = {
            "type": "result",
            "subtype": "success" if success else "error_during_execution",
            "is_error": not success,
            "duration_ms": duration_ms,
            "duration_api_ms": duration_ms,
            "num_turns": self.messages if turns is None else turns,
            "result": summary,
            "session_id": self.session_id,
            "total_cost_usd": usage["cost_usd"],
            "usage": {
                **claude_tokens(usage),
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
            },
            "permission_denials": [],
            "uuid": new_id(),
        }
        if not success:
            result["errors"] = [summary]
        self.out.json(result, compact=True)


def claude_tokens(usage: dict[str, float]) -> dict[str, object]:
    """The token fields of a Claude API ``usage`` object."""
    return {
        "input_tokens": int(usage["input_tokens"]),
        "cache_creation_input_tokens": int(usage["cache_write_tokens"]),
        "cache_read_input_tokens": int(usage["cache_read_tokens"]),
        "output_tokens": int(usage["output_tokens"]),
    }

"""aider (``aider``), one message from a file, then exit.

Flags (aider/args.py): ``--message-file`` sends the file's text and exits after the reply is processed;
``--yes-always`` answers every confirmation (shell commands still need an explicit yes, so none run);
``--no-pretty`` / ``--no-stream`` give plain, uncoloured output with exact per-request costs (aider's
HISTORY: streaming makes its cost figures approximate); ``--no-fancy-input`` keeps prompt_toolkit off a
non-terminal; ``--no-check-update``, ``--no-show-release-notes``, ``--no-analytics``: no network side trips
or questions at start; ``--no-gitignore``: never edit the repository's .gitignore; ``--no-detect-urls``:
issue text must not make aider fetch web pages into the chat.

Auto-commits stay on (aider's default): aider has no other way to put its edits into history, each edit
becomes a commit on the run's branch as it happens (as the other agents are asked to commit as they go),
and a run stopped on its wall clock leaves its progress committed rather than as a dirty tree.

Output: plain text. After each model request aider prints (aider/coders/base_coder.py)
``Tokens: 4.6k sent, 1.2k cache write, 3.0k cache hit, 317 received.`` (counts of that request; ``k``
above 999, thousands separators in older releases) and, when it knows the model's prices,
``Cost: $0.01 message, $0.05 session.`` ("request" in older releases) on the same or the next line;
the session figure is cumulative.

aider has no MCP client, so ``AgentRequest.tools_command`` is ignored; and as it runs no shell commands here it
cannot call the ``agent-grid-tools`` CLI either: an aider run ends on its exit status and the grid's own events.
"""

import re
from dataclasses import dataclass

from agent_grid_contracts.public_usage import Usage

from execution_grid.agents.jsonlines import SUMMARY_MAX_CHARS, clip_tail
from execution_grid.agents.public_agents import AgentCommand, AgentRequest, ReportedEnd

_TOKENS = re.compile(r"\bTokens:\s")
_TOKEN_COUNT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([kKmM]?)\s+(sent|cache write|cache hit|cached|received)\b")
_COST = re.compile(r"\bCost:\s*\$([\d,]*\.?\d+)\s+(?:message|request),\s*\$([\d,]*\.?\d+)\s+session\b")
_TOKEN_LIMIT = re.compile(r"\bhas hit a token limit!")
_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000}
# The chat-history transcript quotes aider's own lines with "> "; accept both that and the raw stdout form.
_QUOTE = re.compile(r"^>\s?")


def _token_count(number: str, suffix: str) -> int:
    try:
        value = float(number.replace(",", ""))
    except ValueError:
        return 0
    return round(value * _MULTIPLIERS[suffix.lower()])


def _money(number: str) -> float | None:
    try:
        return float(number.replace(",", ""))
    except ValueError:
        return None


class AiderReader:
    """Reads aider's plain output: sums the per-request token lines, keeps the last session cost."""

    def __init__(self) -> None:
        self._sent = 0
        self._received = 0
        self._cache_write = 0
        self._cache_read = 0
        self._requests = 0
        self._session_cost: float | None = None
        self._block: list[str] = []
        self._block_chars = 0
        self._reply = ""
        self._last_line = ""
        self._end: ReportedEnd | None = None

    def feed(self, line: str) -> None:
        text = _QUOTE.sub("", line.rstrip())
        is_usage = False
        if _TOKENS.search(text):
            is_usage = self._on_tokens(text)
        cost = _COST.search(text)
        if cost is not None:
            is_usage = True
            session = _money(cost.group(2))
            if session is not None:
                self._session_cost = session
        if _TOKEN_LIMIT.search(text):
            self._end = ReportedEnd(success=False, detail=text.strip())
        if not is_usage:
            self._remember(text)

    def _on_tokens(self, text: str) -> bool:
        counts = {label: _token_count(number, suffix) for number, suffix, label in _TOKEN_COUNT.findall(text)}
        if "sent" not in counts and "received" not in counts:
            return False
        self._requests += 1
        self._sent += counts.get("sent", 0)
        self._received += counts.get("received", 0)
        self._cache_write += counts.get("cache write", 0)
        self._cache_read += counts.get("cache hit", 0) + counts.get("cached", 0)
        # What aider printed since the previous report is the reply this report accounts for.
        self._reply = "\n".join(self._block)
        self._block = []
        self._block_chars = 0
        return True

    def _remember(self, text: str) -> None:
        if text.strip():
            self._last_line = text.strip()
        self._block.append(text)
        self._block_chars += len(text) + 1
        # Only the end of a block can become the summary: keep memory flat on long replies.
        while self._block_chars > 2 * SUMMARY_MAX_CHARS and len(self._block) > 1:
            self._block_chars -= len(self._block.pop(0)) + 1

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self._sent,
            output_tokens=self._received,
            cache_read_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
            cost_usd=self._session_cost or 0.0,
            turns=self._requests,
            reported=self._requests > 0 or self._session_cost is not None,
        )

    @property
    def summary(self) -> str:
        return clip_tail(self._reply) if self._reply.strip() else clip_tail(self._last_line)

    @property
    def reported_end(self) -> ReportedEnd | None:
        # aider prints no verdict of its own; the exit status decides, except for an exhausted context.
        return self._end


@dataclass(frozen=True, slots=True)
class AiderAdapter:
    """aider, unattended.

    ``api_key_env``: aider (through litellm) reads the key of whichever provider the model belongs to
    (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, OPENROUTER_API_KEY...), so no single variable is
    right for every model: the operator names the one that matches the configured model. None passes no key.
    """

    api_key_env: str | None = None

    @property
    def kind(self) -> str:
        return "aider"

    @property
    def wind_down_signal(self) -> int | None:
        # aider installs no SIGUSR1 handler, so Python's default action would simply kill it.
        return None

    def command(self, request: AgentRequest) -> AgentCommand:
        argv = [request.executable or "aider", "--yes-always", "--no-pretty", "--no-stream", "--no-fancy-input"]
        argv += ["--no-check-update", "--no-show-release-notes", "--no-analytics", "--no-gitignore"]
        argv += ["--no-detect-urls"]
        if request.model:
            argv += ["--model", request.model]
        argv += request.extra_args
        argv += ["--message-file", str(request.prompt_file)]
        return AgentCommand(argv=tuple(argv), stdin=None)

    def reader(self) -> AiderReader:
        return AiderReader()

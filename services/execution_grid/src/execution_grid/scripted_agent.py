"""``agent-grid-scripted-agent``: a stand-in coding agent that does what a line of its prompt tells it to.

The end-to-end tests and the benchmark start it where a real agent CLI would run, so the grid's supervision
(usage parsing, stall and wall-clock limits, wind-down, process-group kills, the scrubbed environment) can be
checked without a model. The prompt comes from stdin (until EOF), or from ``--prompt-file PATH``; positional
arguments are read too, as a CLI such as ``claude -p PROMPT`` gets them. The script is the first prompt line
of the form ``script: {json}`` (a leading ``- `` or ``* `` is allowed); ``--script JSON`` overrides it, and with
neither the defaults apply. Other options are accepted and ignored, so an adapter's own flags pass through;
``--output-format stream-json`` makes ``"claude"`` the default format.

Script fields, all optional:

- ``sleep_s`` (0.2): how long it works. ``progress_every_s`` (1.0): a ``progress: step N`` line that often.
- ``exit_code`` (0), ``summary`` ("done"), ``wind_down_exit_code`` (0).
- ``usage``: the final cumulative usage (``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
  ``cache_write_tokens``, ``cost_usd``, ``turns``). Each progress step reports the share of it that matches the
  time worked. Without it no usage lines are printed, as with an agent that reports none.
- ``format``: ``"agent_grid"`` (default) or ``"claude"`` (Claude Code's ``--output-format stream-json``).
- ``hang``: after its opening output, print nothing and sleep until killed. It then ignores wind-down unless
  ``honour_wind_down_when_hung`` is true.
- ``spam_bytes``: print this many bytes in ~100-character lines at start, as fast as the pipe takes them.
- ``stderr_lines``: print this many lines to stderr at start.
- ``ignore_sigterm``: SIGTERM is ignored, so only SIGKILL ends it.
- ``spawn_child``: start a ``sleep 3600`` grandchild in the agent's process group (a SIGKILLed agent leaves it
  behind for the grid's process-group kill to find; any other exit kills it).
- ``record_to``: a file that gets one JSON line per event: ``start`` (wall-clock time ``t``, pid, pgid, run id,
  the *names* of the environment variables, cwd), ``child`` (its pid) and ``exit`` (reason, exit code).

Output (format ``agent_grid``, stdout, flushed line by line): ``progress: step N`` lines, each followed by a
``{"type": "agent_grid.usage", ...}`` line with cumulative usage when the script has ``usage``, and finally
``{"type": "agent_grid.result", "success": ..., "summary": ...}``.

Wind-down: the file named by ``AGENT_GRID_WIND_DOWN_FILE`` appearing (checked every 0.2 s) or SIGUSR1 make it
write ``HANDOFF.md`` into its working directory, print ``wind-down: handed off``, its usage and result, and exit
with ``wind_down_exit_code``. SIGTERM prints ``terminated`` and exits 143; SIGINT prints ``interrupted`` and
exits 130. A script it cannot read exits 2 with the reason on stderr.

A benchmark runs hundreds of these on two cores, so this module imports only cheap standard-library modules
(no ``typing``; from the workspace only the stream-json writer, standard library itself), idles in
``time.sleep``/``signal.pause`` and reads no environment variable but ``AGENT_GRID_*`` and ``PATH``
(``record_to`` lists names only).
"""

import json
import os
import signal
import sys
import time

from execution_grid.claude_stream import USAGE_FIELDS as _USAGE_FIELDS
from execution_grid.claude_stream import ClaudeStream, LineOutput, zero_usage

_SCRIPT_FIELDS = frozenset(
    {
        "sleep_s",
        "progress_every_s",
        "exit_code",
        "usage",
        "summary",
        "hang",
        "honour_wind_down_when_hung",
        "spam_bytes",
        "ignore_sigterm",
        "spawn_child",
        "record_to",
        "format",
        "stderr_lines",
        "wind_down_exit_code",
    }
)
_FORMATS = ("agent_grid", "claude")
_WIND_DOWN_POLL_S = 0.2
_SPAM_LINE = b"spam: " + b"x" * 93 + b"\n"  # 100 bytes
_HELP = "usage: agent-grid-scripted-agent [--prompt-file PATH] [--script JSON] [PROMPT ...]  (see the module docstring)"


class ScriptError(Exception):
    """The script is not valid JSON, names an unknown field or gives a field the wrong type."""


class _Terminated(BaseException):
    """Raised by the SIGTERM handler, so that a sleep or a blocked write ends at once.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """


class Script:
    """What the agent does: the parsed ``script:`` line, with defaults for what it leaves out."""

    def __init__(self, raw: dict[str, object], default_format: str = "agent_grid") -> None:
        unknown = sorted(set(raw) - _SCRIPT_FIELDS)
        if unknown:
            # Strict on purpose: a misspelt field in a test would otherwise silently run the defaults.
            raise ScriptError(f"unknown script field(s): {', '.join(unknown)}")
        self.sleep_s = _number(raw, "sleep_s", 0.2)
        self.progress_every_s = _number(raw, "progress_every_s", 1.0)
        self.exit_code = _integer(raw, "exit_code", 0)
        self.wind_down_exit_code = _integer(raw, "wind_down_exit_code", 0)
        self.spam_bytes = _integer(raw, "spam_bytes", 0)
        self.stderr_lines = _integer(raw, "stderr_lines", 0)
        self.hang = _flag(raw, "hang")
        self.honour_wind_down_when_hung = _flag(raw, "honour_wind_down_when_hung")
        self.ignore_sigterm = _flag(raw, "ignore_sigterm")
        self.spawn_child = _flag(raw, "spawn_child")
        self.summary = _text(raw, "summary", "done")
        self.format = _text(raw, "format", default_format)
        if self.format not in _FORMATS:
            raise ScriptError(f"format must be one of {', '.join(_FORMATS)}, not {self.format!r}")
        record_to = _text(raw, "record_to", "")
        self.record_to = record_to or None
        usage = raw.get("usage")
        self.usage: dict[str, float] | None = None
        if usage is not None:
            if not isinstance(usage, dict):
                raise ScriptError("usage must be an object")
            unknown = sorted(set(usage) - set(_USAGE_FIELDS))
            if unknown:
                raise ScriptError(f"unknown usage field(s): {', '.join(unknown)}")
            self.usage = {name: _number(usage, name, 0.0) for name in _USAGE_FIELDS}


def _number(raw: dict[str, object], name: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptError(f"{name} must be a number")
    return float(value)


def _integer(raw: dict[str, object], name: str, default: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScriptError(f"{name} must be an integer")
    return value


def _flag(raw: dict[str, object], name: str) -> bool:
    value = raw.get(name, False)
    if not isinstance(value, bool):
        raise ScriptError(f"{name} must be true or false")
    return value


def _text(raw: dict[str, object], name: str, default: str) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str):
        raise ScriptError(f"{name} must be a string")
    return value


def find_script_line(prompt: str) -> str | None:
    """The JSON of the first ``script: {...}`` line in the prompt, if any."""
    for line in prompt.splitlines():
        text = line.strip()
        if text[:2] in ("- ", "* "):
            text = text[2:].lstrip()
        if text.startswith("script:"):
            return text[len("script:") :].strip()
    return None


def parse_script(text: str | None, default_format: str = "agent_grid") -> Script:
    """The script from its JSON text (None: the defaults)."""
    if text is None:
        return Script({}, default_format)
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ScriptError(f"script is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ScriptError("script must be a JSON object")
    return Script(raw, default_format)


class _Arguments:
    def __init__(self, argv: list[str]) -> None:
        self.prompt_file: str | None = None
        self.script: str | None = None
        self.output_format: str | None = None
        self.help = False
        self.positional: list[str] = []
        # Hand-rolled rather than argparse: argparse alone costs more start-up than the rest of this module,
        # and unknown options must pass through (an adapter appends its own flags).
        options = {"--prompt-file", "--script", "--output-format"}
        index = 0
        while index < len(argv):
            arg = argv[index]
            index += 1
            name, equals, value = arg.partition("=")
            if name in options:
                if not equals:
                    if index >= len(argv):
                        raise ScriptError(f"{name} needs a value")
                    value = argv[index]
                    index += 1
                if name == "--prompt-file":
                    self.prompt_file = value
                elif name == "--script":
                    self.script = value
                else:
                    self.output_format = value
            elif arg in ("-h", "--help"):
                self.help = True
            elif not arg.startswith("-"):
                self.positional.append(arg)


def _read_prompt(arguments: _Arguments) -> str:
    parts = list(arguments.positional)
    if arguments.prompt_file is not None:
        with open(arguments.prompt_file, encoding="utf-8", errors="replace") as prompt_file:
            parts.insert(0, prompt_file.read())
    elif not sys.stdin.isatty():
        # A terminal would block forever waiting for EOF; the grid always gives a pipe or /dev/null.
        parts.insert(0, sys.stdin.buffer.read().decode("utf-8", "replace"))
    return "\n".join(parts)


def _append_record(path: str | None, record: dict[str, object]) -> None:
    if path is None:
        return
    # One O_APPEND write per line, so that many agents recording to one file never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _environment_names() -> list[str]:
    # The environment as exec'd, not os.environ: the interpreter adds LC_CTYPE to its own environment when it
    # coerces a C locale (PEP 538), and a test of the grid's scrubbed environment must not see that.
    try:
        with open("/proc/self/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return sorted(os.environ)
    return sorted({entry.partition(b"=")[0].decode(errors="replace") for entry in entries if entry})


def _spawn_child() -> int:
    sleep = next((path for path in ("/bin/sleep", "/usr/bin/sleep") if os.access(path, os.X_OK)), None)
    argv = [sleep, "3600"] if sleep else [sys.executable, "-c", "import time; time.sleep(3600)"]
    # posix_spawn rather than subprocess (which costs start-up to import). No setpgroup: the child stays in
    # the agent's process group, which is the point. setsigdef undoes an inherited SIG_IGN for SIGTERM.
    return os.posix_spawn(
        argv[0], argv, os.environ, setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
    )


def _reap_child(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class _Agent:
    def __init__(self, script: Script, output: LineOutput) -> None:
        self.script = script
        self.out = output
        self.claude = script.format == "claude"
        self.stream = ClaudeStream(output)
        self.started = time.monotonic()
        self.step = 0
        self.wind_down_signalled = False
        self.wind_down_file = os.environ.get("AGENT_GRID_WIND_DOWN_FILE") or None
        self.child_pid: int | None = None

    def usage_at(self, fraction: float) -> dict[str, float]:
        final = self.script.usage or zero_usage()
        fraction = min(1.0, max(0.0, fraction))
        scaled = {name: float(int(final[name] * fraction)) for name in _USAGE_FIELDS}
        scaled["cost_usd"] = round(final["cost_usd"] * fraction, 6)
        return scaled

    def fraction_done(self) -> float:
        if self.script.sleep_s <= 0:
            return 1.0
        return (time.monotonic() - self.started) / self.script.sleep_s

    def opening(self) -> None:
        if self.claude:
            self.stream.init()
        for number in range(1, self.script.stderr_lines + 1):
            self.out.error(f"stderr: line {number}")
        remaining = self.script.spam_bytes
        chunk = _SPAM_LINE * 655  # ~64 KiB per write: as fast as the pipe drains
        while remaining >= len(chunk):
            self.out.raw(chunk)
            remaining -= len(chunk)
        while remaining >= len(_SPAM_LINE):
            self.out.raw(_SPAM_LINE)
            remaining -= len(_SPAM_LINE)
        if remaining:
            self.out.raw(b"x" * (remaining - 1) + b"\n")

    def progress(self, text: str) -> None:
        usage = self.usage_at(self.fraction_done())
        if self.claude:
            self.stream.assistant(text, usage)
            return
        self.out.line(text)
        if self.script.usage is not None:
            self.out.json(_agent_grid_usage(usage))

    def finish(self, exit_code: int, summary: str, fraction: float) -> int:
        usage = self.usage_at(fraction)
        success = exit_code == 0
        if self.claude:
            self.stream.assistant(summary, usage, final=True)
            turns = int(usage["turns"]) if self.script.usage is not None else None
            self.stream.result(success, summary, usage, turns)
        else:
            if self.script.usage is not None:
                self.out.json(_agent_grid_usage(usage))
            self.out.json({"type": "agent_grid.result", "success": success, "summary": summary})
        return exit_code

    def on_wind_down_signal(self, _signum: int, _frame: object) -> None:
        # Only a flag: the work loop notices it within one poll interval and winds down outside the handler.
        self.wind_down_signalled = True

    def wind_down_requested(self) -> str | None:
        if self.wind_down_signalled:
            return "SIGUSR1"
        if self.wind_down_file is not None and os.path.exists(self.wind_down_file):
            return "the wind-down file"
        return None

    def work(self) -> tuple[int, str]:
        """Sleep through the work, printing progress; returns (exit code, exit reason)."""
        script = self.script
        every = script.progress_every_s
        next_progress = every if every > 0 else float("inf")
        while True:
            trigger = self.wind_down_requested()
            if trigger is not None:
                return self.wind_down(trigger), "wind_down"
            elapsed = time.monotonic() - self.started
            if elapsed >= script.sleep_s:
                return self.finish(script.exit_code, script.summary, 1.0), "completed"
            if elapsed >= next_progress:
                self.step += 1
                self.progress(f"progress: step {self.step}")
                next_progress += every
                continue
            time.sleep(max(0.0, min(_WIND_DOWN_POLL_S, next_progress - elapsed, script.sleep_s - elapsed)))

    def hang(self) -> tuple[int, str]:
        if not self.script.honour_wind_down_when_hung:
            # Nothing but SIGTERM/SIGINT (or SIGKILL) wakes it: pause() costs no CPU at all.
            while True:
                signal.pause()
        while True:
            trigger = self.wind_down_requested()
            if trigger is not None:
                return self.wind_down(trigger), "wind_down"
            time.sleep(_WIND_DOWN_POLL_S)

    def wind_down(self, trigger: str) -> int:
        elapsed = time.monotonic() - self.started
        handoff = (
            "# Hand-off\n\n"
            f"The scripted agent wound down on {trigger} after {elapsed:.1f} s of {self.script.sleep_s:g} s of "
            f"work, at step {self.step}.\n\n"
            f"- Done: steps 1 to {self.step}.\n"
            f"- Next: carry on from step {self.step + 1}.\n"
        )
        with open("HANDOFF.md", "w", encoding="utf-8") as handoff_file:
            handoff_file.write(handoff)
        if self.claude:
            self.stream.assistant("wind-down: handed off", self.usage_at(self.fraction_done()))
        else:
            self.out.line("wind-down: handed off")
        summary = f"handed off at step {self.step} (see HANDOFF.md)"
        return self.finish(self.script.wind_down_exit_code, summary, self.fraction_done())

    def stopped(self, message: str) -> None:
        if self.claude:
            # Claude Code's stdout is JSON lines only; a note for people goes to stderr.
            self.out.error(message)
        else:
            self.out.line(message)


def _agent_grid_usage(usage: dict[str, float]) -> dict[str, object]:
    line: dict[str, object] = {"type": "agent_grid.usage"}
    for name in _USAGE_FIELDS:
        line[name] = usage[name] if name == "cost_usd" else int(usage[name])
    return line


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the scripted agent; returns its exit code."""
    output = LineOutput()
    try:
        arguments = _Arguments(sys.argv[1:] if argv is None else argv)
        if arguments.help:
            output.line(_HELP)
            return 0
        default_format = "claude" if arguments.output_format == "stream-json" else "agent_grid"
        script_text = arguments.script
        if script_text is None:
            script_text = find_script_line(_read_prompt(arguments))
        script = parse_script(script_text, default_format)
    except (ScriptError, OSError) as error:
        output.error(f"scripted-agent: {error}")
        return 2

    agent = _Agent(script, output)
    # Handlers before the start record: a test that has seen the record may signal at once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN if script.ignore_sigterm else _on_sigterm)
    if script.hang and not script.honour_wind_down_when_hung:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGUSR1, agent.on_wind_down_signal)

    exit_code, reason = 1, "error"
    try:
        _append_record(
            script.record_to,
            {
                "event": "start",
                "t": time.time(),
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "run_id": os.environ.get("AGENT_GRID_RUN_ID"),
                "env": _environment_names(),
                "cwd": os.getcwd(),
            },
        )
        if script.spawn_child:
            agent.child_pid = _spawn_child()
            _append_record(script.record_to, {"event": "child", "pid": agent.child_pid})
        agent.opening()
        exit_code, reason = agent.hang() if script.hang else agent.work()
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        agent.stopped("terminated")
        exit_code, reason = 143, "terminated"
    except KeyboardInterrupt:
        agent.stopped("interrupted")
        exit_code, reason = 130, "interrupted"
    finally:
        # A SIGTERM now must not interrupt the clean-up (a leaked child, a missing exit record); the process is
        # about to exit anyway.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _reap_child(agent.child_pid)
        _append_record(script.record_to, {"event": "exit", "reason": reason, "exit_code": exit_code})
        if not script.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

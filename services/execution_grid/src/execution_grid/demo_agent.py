"""``agent-grid-demo-agent``: a stand-in general-purpose agent for the local grid's demo (``make run``).

It needs no model: it speaks Claude Code's stream-json (so it runs as the ``claude_code`` kind, through the
real adapter, usage parsing included) and acts on its issue through the ``agent-grid-tools`` command, as the
prompt tells a real agent to. What it does follows its run's mode (``AGENT_GRID_MODE``) and its issue:

- ``plan`` on an issue whose description lists steps as a task list (``- [ ] Title``): it splits the issue
  into those sub-issues, in order; a step ending in ``(after 1, 2)`` is blocked by those steps (1-based).
  Then ``finish split``.
- ``plan`` or ``work`` otherwise: the work fits in one run. It writes a note on the run's branch, commits and
  pushes it, keeps its workpad, and ends with ``finish done --close``.
- ``manage`` on a parent: it reads the children. All closed: a summary comment and ``finish done --close``.
  Otherwise it nudges the first open child nobody holds and notes the progress in its workpad.
- a description line ``demo-agent: runaway`` makes it spend tokens without end, until the grid stops it at
  the run's budget.

Steps and the runaway line are read only from a description whose author the coordinator trusts
(``author_trusted`` in ``show``): untrusted text is data, never instructions. The wind-down file
(``AGENT_GRID_WIND_DOWN_FILE``) makes it ``finish handoff``; SIGTERM ends it at once (exit 143).

Options: ``--step-s SECONDS`` (0.6): the pause between its steps, so that a person can follow the demo.
Every other argument (the adapter's flags, a prompt) is accepted and ignored; the prompt on stdin is read.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from execution_grid.claude_stream import ClaudeStream, LineOutput, zero_usage

RUNAWAY_LINE = "demo-agent: runaway"
_STEP = re.compile(r"^\s*[-*]\s+\[ \]\s+(?P<title>.+?)\s*$")
_AFTER = re.compile(r"\(after\s+(?P<numbers>\d+(?:\s*,\s*\d+)*)\)\s*$", re.IGNORECASE)
# What one "model call" costs in the demo: small for ordinary steps, large for the runaway.
_CALL = {"input_tokens": 1800.0, "output_tokens": 350.0, "cache_read_tokens": 600.0, "cost_usd": 0.011}
_RUNAWAY_CALL = {"input_tokens": 48_000.0, "output_tokens": 2_000.0, "cost_usd": 0.16}
_RUNAWAY_EVERY_S = 0.25
_TOOL_TIMEOUT_S = 60
_GIT = ["git", "-c", "user.name=agent-grid demo agent", "-c", "user.email=demo-agent@agent-grid.invalid"]


class _Terminated(BaseException):
    """SIGTERM: stop now (a BaseException, so no ``except Exception`` swallows it)."""


class _WindDown(Exception):
    """The grid asked for a hand-off."""


class ToolFailed(Exception):
    """An agent-grid tool call failed; the message is its JSON error."""

    def __init__(self, command: str, exit_code: int, error: str) -> None:
        super().__init__(f"agent-grid-tools {command} exited {exit_code}: {error}")
        self.exit_code = exit_code


@dataclass(frozen=True)
class Step:
    """One sub-issue to create: its title and the earlier steps (0-based) it waits for."""

    title: str
    after: tuple[int, ...] = ()


@dataclass(frozen=True)
class Directives:
    """What the issue's description asks of the demo agent."""

    steps: tuple[Step, ...] = ()
    runaway: bool = False


def read_directives(body: str, *, trusted: bool) -> Directives:
    """The steps and the runaway line of a description; nothing at all from an untrusted author."""
    if not trusted:
        return Directives()
    steps: list[Step] = []
    for line in body.splitlines():
        match = _STEP.match(line)
        if match is None:
            continue
        title = match.group("title")
        after: tuple[int, ...] = ()
        found = _AFTER.search(title)
        if found is not None:
            title = title[: found.start()].rstrip()
            numbers = (int(number) - 1 for number in found.group("numbers").split(","))
            # Only earlier steps can be waited for (the tools refuse anything else).
            after = tuple(sorted({number for number in numbers if 0 <= number < len(steps)}))
        steps.append(Step(title=title, after=after))
    runaway = any(line.strip().lower() == RUNAWAY_LINE for line in body.splitlines())
    return Directives(steps=tuple(steps), runaway=runaway)


@dataclass
class DemoAgent:
    """One run: the stream it prints, the tools it calls, the pace it keeps."""

    stream: ClaudeStream
    step_s: float
    issue: str
    mode: str
    tools: list[str]
    usage: dict[str, float] = field(default_factory=zero_usage)
    wind_down_file: str | None = None

    # -- the stream, the pace and the tools ------------------------------------------------------------------

    def say(self, text: str, call: dict[str, float] | None = None) -> None:
        """One 'model call': its text and its usage."""
        for name, amount in (call or _CALL).items():
            self.usage[name] += amount
        self.usage["turns"] += 1
        self.stream.assistant(text, self.usage)

    def pause(self, seconds: float | None = None) -> None:
        deadline = time.monotonic() + (self.step_s if seconds is None else seconds)
        while True:
            if self.wind_down_file and os.path.exists(self.wind_down_file):
                raise _WindDown
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def tool(self, *arguments: str, stdin: str | None = None) -> dict[str, object]:
        """Run ``agent-grid-tools ARGUMENTS``; its JSON answer, or ToolFailed with its JSON error."""
        completed = subprocess.run(
            [*self.tools, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
        if completed.returncode != 0:
            raise ToolFailed(arguments[0], completed.returncode, completed.stderr.strip() or completed.stdout.strip())
        answer = json.loads(completed.stdout or "{}")
        return answer if isinstance(answer, dict) else {}

    def finish(self, outcome: str, summary: str, *extra: str) -> None:
        self.tool("finish", outcome, "--summary", summary, *extra)

    # -- what it does ----------------------------------------------------------------------------------------

    def run(self) -> tuple[bool, str]:
        """Act on the issue; returns (success, summary)."""
        self.say(f"Reading {self.issue} with the agent-grid tools.")
        detail = self.tool("show")
        self.pause()
        directives = read_directives(str(detail.get("body", "")), trusted=bool(detail.get("author_trusted")))
        if self.mode == "manage":
            return self.manage(detail)
        if directives.runaway:
            return self.run_away()
        if self.mode == "plan" and directives.steps:
            return self.split(directives.steps)
        return self.work(detail)

    def split(self, steps: tuple[Step, ...]) -> tuple[bool, str]:
        self.say(f"This is more than one run: splitting it into {len(steps)} ordered sub-issues.")
        plan = "\n".join(f"{index}. {step.title}" for index, step in enumerate(steps, 1))
        self.tool("workpad", f"**Plan** (demo agent)\n\n{plan}")
        self.pause()
        entries = [
            {
                "title": step.title,
                # Acceptance criteria as plain bullets: a task list here would read as steps to split into.
                "body": f"Part of {self.issue}.\n\nDone when:\n* {step.title.lower()} works;\n* the tests pass.",
                "blocked_by": list(step.after),
            }
            for step in steps
        ]
        created = self.tool("create-subissues", "--json", "-", stdin=json.dumps(entries))
        numbers = [str(card.get("issue")) for card in _cards(created.get("created"))]
        self.say(f"Created {', '.join(numbers)}; each will be worked in its own run.")
        summary = f"split into {len(numbers)} sub-issues: {', '.join(numbers)}"
        self.finish("split", summary)
        return True, summary

    def work(self, detail: dict[str, object]) -> tuple[bool, str]:
        title = str(detail.get("title", self.issue))
        self.say(f"This fits in one run: {title}.")
        self.tool("workpad", "**Working on it** (demo agent)\n\n- [ ] write the change\n- [ ] commit and push")
        self.pause()
        branch = self.commit_and_push(title)
        self.say(f"Pushed {branch}.")
        self.tool("workpad", f"**Done** (demo agent)\n\n- [x] write the change\n- [x] commit and push `{branch}`")
        self.pause()
        summary = f"did '{title}' on branch {branch}"
        self.finish("done", summary, "--close")
        return True, summary

    def commit_and_push(self, title: str) -> str:
        number = self.issue.rpartition("#")[2]
        os.makedirs("notes", exist_ok=True)
        with open(os.path.join("notes", f"issue-{number}.md"), "w", encoding="utf-8") as note:
            note.write(f"# {title}\n\nDone by agent-grid's demo agent for {self.issue}.\n")
        branch = os.environ.get("AGENT_GRID_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD")
        _git("add", "notes")
        _git("commit", "-q", "-m", f"{title} ({self.issue})")
        _git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return branch

    def manage(self, detail: dict[str, object]) -> tuple[bool, str]:
        children = _cards(detail.get("children"))
        done = [child for child in children if child.get("state") == "closed"]
        self.say(f"Managing {self.issue}: {len(done)} of {len(children)} sub-issues done.")
        checklist = "\n".join(
            f"- [{'x' if child.get('state') == 'closed' else ' '}] {child.get('issue')} {child.get('title')}"
            for child in children
        )
        if children and len(done) == len(children):
            self.tool("comment", f"All {len(children)} sub-issues are done:\n\n{checklist}")
            self.pause()
            summary = f"all {len(children)} sub-issues done; closing {self.issue}"
            self.finish("done", summary, "--close")
            return True, summary
        held = [child for child in children if child.get("state") != "closed" and _held(child)]
        free = [child for child in children if child.get("state") != "closed" and not child.get("assignees")]
        free = [child for child in free if child not in held]
        notes = [f"waiting for a person on {child.get('issue')}" for child in held]
        if free:
            nudged = str(free[0].get("issue"))
            self.tool("nudge", nudged, "--reason", f"the next open step of {self.issue}")
            notes.append(f"nudged {nudged}")
        self.tool("workpad", f"**Progress** (demo agent)\n\n{checklist}\n\n" + "; ".join(notes or ["all in hand"]))
        self.pause()
        summary = f"{len(done)} of {len(children)} sub-issues done" + (f"; {'; '.join(notes)}" if notes else "")
        return True, summary

    def run_away(self) -> tuple[bool, str]:
        self.say("Optimising everything, one more pass at a time.")
        passes = 0
        while True:  # until the grid stops the run at its budget
            passes += 1
            self.say(f"Pass {passes}: still not fast enough, trying again.", _RUNAWAY_CALL)
            self.pause(_RUNAWAY_EVERY_S)


def _cards(value: object) -> list[dict[str, object]]:
    return [card for card in value if isinstance(card, dict)] if isinstance(value, list) else []


def _held(child: dict[str, object]) -> bool:
    labels = child.get("labels")
    return isinstance(labels, list) and "needs-human" in labels


def _git(*arguments: str) -> str:
    completed = subprocess.run([*_GIT, *arguments], capture_output=True, text=True, check=True, timeout=60)
    return completed.stdout.strip()


def _tools_command() -> list[str]:
    found = shutil.which("agent-grid-tools") or os.path.join(os.path.dirname(sys.executable), "agent-grid-tools")
    return [found]


def _step_s(argv: list[str]) -> float:
    for index, argument in enumerate(argv):
        name, equals, value = argument.partition("=")
        if name == "--step-s":
            return float(value if equals else argv[index + 1])
    return 0.6


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the demo agent on the run's issue; returns its exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    output = LineOutput()
    if not sys.stdin.isatty():
        sys.stdin.buffer.read()  # the prompt: a real agent reads it; the writer must not block on a full pipe
    issue, mode = os.environ.get("AGENT_GRID_ISSUE"), os.environ.get("AGENT_GRID_MODE")
    if not issue or not mode or not os.environ.get("AGENT_GRID_RUN_TOKEN"):
        output.error("demo-agent: not inside an agent-grid run with tools (AGENT_GRID_ISSUE, _MODE, _RUN_TOKEN)")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    stream = ClaudeStream(output)
    agent = DemoAgent(
        stream=stream,
        step_s=_step_s(arguments),
        issue=issue,
        mode=mode,
        tools=_tools_command(),
        wind_down_file=os.environ.get("AGENT_GRID_WIND_DOWN_FILE") or None,
    )
    stream.init([{"name": "agent-grid", "status": "connected"}])
    try:
        success, summary = agent.run()
    except _WindDown:
        summary = "wound down before the end; the next run carries on"
        agent.finish("handoff", summary)
        success = True
    except _Terminated:
        output.error("demo-agent: terminated")
        return 143
    except (ToolFailed, subprocess.SubprocessError, OSError, ValueError) as error:
        success, summary = False, f"demo agent failed: {error}"
    agent.say(summary)
    stream.result(success, summary, agent.usage)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())

"""The scripted agent, run as the real executable the way the grid runs it: its own process group, a pipe for
stdin, a scrubbed environment."""

import contextlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

EXECUTABLE = "agent-grid-scripted-agent"
USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_tokens": 3000,
    "cache_write_tokens": 400,
    "cost_usd": 0.5,
    "turns": 4,
}

StartAgent = Callable[..., subprocess.Popen[str]]


def agent_argv() -> list[str]:
    beside_python = Path(sys.executable).parent / EXECUTABLE
    found = str(beside_python) if beside_python.exists() else shutil.which(EXECUTABLE)
    assert found, f"{EXECUTABLE} is not installed: run `uv sync --all-packages`"
    return [found]


def scrubbed_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


def run_agent(
    script: dict[str, object] | None = None,
    *,
    cwd: Path,
    prompt: str = "",
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [*agent_argv(), *args, *(["--script", json.dumps(script)] if script is not None else [])]
    return subprocess.run(
        argv,
        input=prompt,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=scrubbed_env() if env is None else env,
        timeout=20,
        process_group=0,
        check=False,
    )


@pytest.fixture
def start_agent() -> Iterator[StartAgent]:
    started: list[subprocess.Popen[str]] = []

    def start(script: dict[str, object], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*agent_argv(), "--script", json.dumps(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=scrubbed_env() if env is None else env,
            process_group=0,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        # The whole group: a SIGKILLed agent's grandchild is still in it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def read_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    """Lines of stdout up to and including the first that contains ``wanted`` (pytest-timeout guards a hang)."""
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline()
        assert line, f"stdout ended before {wanted!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if wanted in line:
            return lines


def wait_for_record(path: Path, event: str, timeout_s: float = 5.0) -> dict[str, Any]:
    # The record file is written by another process; nothing but polling can observe it.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in read_records(path):
            if record["event"] == event:
                return record
        time.sleep(0.01)
    raise AssertionError(f"no {event!r} record in {path}")


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # An orphan may sit as a zombie if nothing reaps it here; a zombie is dead for our purposes.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_defaults_print_the_result_only_and_exit_0(tmp_path: Path) -> None:
    done = run_agent(cwd=tmp_path)

    assert done.returncode == 0
    assert done.stdout.splitlines() == [json.dumps({"type": "agent_grid.result", "success": True, "summary": "done"})]
    assert done.stderr == ""


def test_exit_code_and_summary_come_from_the_script(tmp_path: Path) -> None:
    done = run_agent({"sleep_s": 0, "exit_code": 3, "summary": "tests fail"}, cwd=tmp_path)

    assert done.returncode == 3
    assert json_lines(done.stdout)[-1] == {"type": "agent_grid.result", "success": False, "summary": "tests fail"}


def test_usage_lines_are_cumulative_and_end_at_the_scripted_total(tmp_path: Path) -> None:
    done = run_agent({"sleep_s": 0.35, "progress_every_s": 0.1, "usage": USAGE}, cwd=tmp_path)

    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("progress:")] == [f"progress: step {n}" for n in (1, 2, 3)]
    usages = [line for line in json_lines(done.stdout) if line["type"] == "agent_grid.usage"]
    assert len(usages) == 4  # one per progress line, then the final total
    assert usages[-1] == {"type": "agent_grid.usage", **USAGE}
    for earlier, later in itertools.pairwise(usages):
        assert all(earlier[name] <= later[name] for name in USAGE)
    assert json_lines(done.stdout)[-1]["type"] == "agent_grid.result"


@pytest.mark.parametrize(("exit_code", "subtype"), [(0, "success"), (3, "error_during_execution")])
def test_claude_format_prints_stream_json(tmp_path: Path, exit_code: int, subtype: str) -> None:
    script = {"format": "claude", "sleep_s": 0.25, "progress_every_s": 0.1, "usage": USAGE, "exit_code": exit_code}
    done = run_agent(script, cwd=tmp_path)

    assert done.returncode == exit_code
    events = [json.loads(line) for line in done.stdout.splitlines()]  # every line is JSON
    init, *assistants, result = events
    assert init["type"] == "system"
    assert init["subtype"] == "init"
    assert init["session_id"]
    assert isinstance(init["tools"], list)
    assert assistants
    assert {event["type"] for event in assistants} == {"assistant"}
    for event in assistants:
        assert event["session_id"] == init["session_id"]
        assert event["message"]["role"] == "assistant"
        assert event["message"]["content"][0]["type"] == "text"
        assert event["message"]["model"]
    assert assistants[-1]["message"]["content"][0]["text"] == "done"
    assert result["type"] == "result"
    assert result["subtype"] == subtype
    assert result["is_error"] is (exit_code != 0)
    assert result["num_turns"] == USAGE["turns"]
    assert result["result"] == "done"
    assert result["total_cost_usd"] == USAGE["cost_usd"]
    assert result["session_id"] == init["session_id"]
    assert isinstance(result["duration_ms"], int)
    tokens = {
        "input_tokens": USAGE["input_tokens"],
        "output_tokens": USAGE["output_tokens"],
        "cache_creation_input_tokens": USAGE["cache_write_tokens"],
        "cache_read_input_tokens": USAGE["cache_read_tokens"],
    }
    assert {name: result["usage"][name] for name in tokens} == tokens
    # Like Claude Code, each assistant message carries its own call's usage; they add up to the result's.
    assert {name: sum(event["message"]["usage"][name] for event in assistants) for name in tokens} == tokens


def test_output_format_flag_and_positional_prompt_stand_in_for_claude(tmp_path: Path) -> None:
    done = run_agent(
        cwd=tmp_path,
        args=("-p", "--output-format", "stream-json", "--verbose", 'Fix it.\nscript: {"sleep_s": 0, "summary": "ok"}'),
    )

    assert done.returncode == 0
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["type"], result["result"]) == ("result", "ok")


def test_hung_agent_prints_nothing_and_ignores_wind_down(tmp_path: Path, start_agent: StartAgent) -> None:
    record, wind_down_file = tmp_path / "record.jsonl", tmp_path / "wind-down"
    agent = start_agent(
        {"hang": True, "record_to": str(record)},
        cwd=tmp_path,
        env=scrubbed_env(AGENT_GRID_WIND_DOWN_FILE=str(wind_down_file)),
    )
    wait_for_record(record, "start")
    agent.send_signal(signal.SIGUSR1)
    wind_down_file.touch()

    assert agent.stdout is not None
    readable, _, _ = select.select([agent.stdout], [], [], 1.0)
    assert readable == []  # no output, not even EOF
    assert agent.poll() is None
    assert not (tmp_path / "HANDOFF.md").exists()
    agent.kill()
    assert agent.wait(timeout=5) == -signal.SIGKILL


def test_hung_agent_honours_wind_down_when_told(tmp_path: Path, start_agent: StartAgent) -> None:
    record = tmp_path / "record.jsonl"
    script = {"hang": True, "honour_wind_down_when_hung": True, "wind_down_exit_code": 75, "record_to": str(record)}
    agent = start_agent(script, cwd=tmp_path)
    wait_for_record(record, "start")
    agent.send_signal(signal.SIGUSR1)

    assert agent.wait(timeout=5) == 75
    assert (tmp_path / "HANDOFF.md").exists()


def test_spam_bytes_and_stderr_lines(tmp_path: Path) -> None:
    done = run_agent({"sleep_s": 0, "spam_bytes": 300_001, "stderr_lines": 3}, cwd=tmp_path)

    assert done.returncode == 0
    lines = done.stdout.splitlines()
    spam = lines[:-1]
    assert sum(len(line) + 1 for line in spam) == 300_001
    assert max(len(line) for line in spam) < 100
    assert json.loads(lines[-1])["type"] == "agent_grid.result"
    assert done.stderr.splitlines() == ["stderr: line 1", "stderr: line 2", "stderr: line 3"]


@pytest.mark.parametrize("trigger", ["file", "SIGUSR1"])
def test_wind_down_writes_a_handoff_and_exits_with_the_wind_down_code(
    tmp_path: Path, start_agent: StartAgent, trigger: str
) -> None:
    workspace, wind_down_file = tmp_path / "workspace", tmp_path / "wind-down"
    workspace.mkdir()
    script = {"sleep_s": 30, "progress_every_s": 0.05, "usage": USAGE, "wind_down_exit_code": 75}
    agent = start_agent(script, cwd=workspace, env=scrubbed_env(AGENT_GRID_WIND_DOWN_FILE=str(wind_down_file)))
    read_until(agent, "progress: step 2")
    if trigger == "file":
        wind_down_file.touch()
    else:
        agent.send_signal(signal.SIGUSR1)

    rest, _ = agent.communicate(timeout=5)
    assert agent.returncode == 75
    after = rest[rest.index("wind-down: handed off") :].splitlines()
    assert after[0] == "wind-down: handed off"
    usage, result = (json.loads(line) for line in after[-2:])
    assert usage["type"] == "agent_grid.usage"
    assert 0 < usage["input_tokens"] < USAGE["input_tokens"]  # handed off part-way
    assert result["type"] == "agent_grid.result"
    assert result["success"] is False
    handoff = (workspace / "HANDOFF.md").read_text()
    reached = re.search(r"at step (\d+)", handoff)
    assert reached
    assert int(reached[1]) >= 2


def test_sigterm_prints_terminated_and_exits_143(tmp_path: Path, start_agent: StartAgent) -> None:
    record = tmp_path / "record.jsonl"
    agent = start_agent({"sleep_s": 30, "progress_every_s": 0.05, "record_to": str(record)}, cwd=tmp_path)
    read_until(agent, "progress: step 1")
    agent.terminate()

    rest, _ = agent.communicate(timeout=5)
    assert agent.returncode == 143
    assert rest.splitlines()[-1] == "terminated"
    assert read_records(record)[-1] == {"event": "exit", "reason": "terminated", "exit_code": 143}


def test_ignore_sigterm_needs_sigkill(tmp_path: Path, start_agent: StartAgent) -> None:
    agent = start_agent({"sleep_s": 30, "progress_every_s": 0.05, "ignore_sigterm": True}, cwd=tmp_path)
    read_until(agent, "progress: step 1")
    agent.terminate()

    with pytest.raises(subprocess.TimeoutExpired):
        agent.wait(timeout=0.5)
    read_until(agent, "progress:")  # still working
    agent.kill()
    assert agent.wait(timeout=5) == -signal.SIGKILL


def test_spawned_child_lives_in_the_agent_group_and_outlives_a_sigkill(tmp_path: Path, start_agent: StartAgent) -> None:
    record = tmp_path / "record.jsonl"
    agent = start_agent(
        {"sleep_s": 30, "progress_every_s": 0.05, "spawn_child": True, "record_to": str(record)}, cwd=tmp_path
    )
    read_until(agent, "progress: step 1")
    child = wait_for_record(record, "child")["pid"]
    assert isinstance(child, int)

    assert alive(child)
    assert os.getpgid(child) == agent.pid  # the agent leads its own group (process_group=0)
    agent.kill()
    agent.wait(timeout=5)
    assert alive(child)  # what the grid's process-group kill is for
    os.killpg(agent.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


@pytest.mark.parametrize("how", ["completes", "SIGTERM"])
def test_spawned_child_is_killed_on_any_other_exit(tmp_path: Path, start_agent: StartAgent, how: str) -> None:
    record = tmp_path / "record.jsonl"
    sleep_s = 0.3 if how == "completes" else 30
    script = {"sleep_s": sleep_s, "progress_every_s": 0.05, "spawn_child": True, "record_to": str(record)}
    agent = start_agent(script, cwd=tmp_path)
    read_until(agent, "progress: step 1")
    child = wait_for_record(record, "child")["pid"]
    assert isinstance(child, int)
    if how == "SIGTERM":
        agent.terminate()

    agent.communicate(timeout=5)
    assert agent.returncode == (0 if how == "completes" else 143)
    assert not alive(child)
    assert [r["event"] for r in read_records(record)] == ["start", "child", "exit"]


def test_start_record_names_the_environment_without_its_values(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    env = scrubbed_env(AGENT_GRID_RUN_ID="run-7", SOME_TOKEN="not-for-agents")
    done = run_agent({"sleep_s": 0, "record_to": str(record)}, cwd=tmp_path, env=env)

    assert done.returncode == 0
    start, end = read_records(record)
    assert start["event"] == "start"
    assert start["run_id"] == "run-7"
    assert start["env"] == sorted(env)
    assert start["cwd"] == str(tmp_path)
    assert isinstance(start["pid"], int)
    assert start["pgid"] == start["pid"]
    assert "not-for-agents" not in record.read_text()
    assert end == {"event": "exit", "reason": "completed", "exit_code": 0}


@pytest.mark.parametrize(
    ("prompt", "args", "expected"),
    [
        ('Do the thing.\n- script: {"sleep_s": 0, "exit_code": 4}\nThanks.', (), 4),
        ('  * script:   {"sleep_s": 0, "exit_code": 6}', (), 6),
        ('script: {"sleep_s": 0, "exit_code": 4}', ("--script", '{"sleep_s": 0, "exit_code": 5}'), 5),
        ("No script here.", (), 0),
    ],
    ids=["dash-line", "star-line", "--script-overrides", "defaults"],
)
def test_script_comes_from_the_prompt_unless_given_on_the_command_line(
    tmp_path: Path, prompt: str, args: tuple[str, ...], expected: int
) -> None:
    assert run_agent(cwd=tmp_path, prompt=prompt, args=args).returncode == expected


def test_prompt_file_is_read_instead_of_stdin(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text('Work.\nscript: {"sleep_s": 0, "exit_code": 7}\n')

    done = run_agent(cwd=tmp_path, args=("--prompt-file", str(prompt_file)), prompt='script: {"exit_code": 1}')

    assert done.returncode == 7


@pytest.mark.parametrize("script", ['{"sleep": 1}', '{"exit_code": "1"}', "not json", '{"format": "codex"}'])
def test_an_unreadable_script_exits_2_with_the_reason(tmp_path: Path, script: str) -> None:
    done = run_agent(cwd=tmp_path, args=("--script", script))

    assert done.returncode == 2
    assert done.stderr.startswith("scripted-agent: ")
    assert done.stdout == ""


def test_module_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "execution_grid.scripted_agent", "--script", '{"sleep_s": 0}'],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=20,
        check=False,
    )

    assert done.returncode == 0
    assert json.loads(done.stdout)["success"] is True


def test_startup_is_cheap(tmp_path: Path) -> None:
    timings_ms = []
    for _ in range(5):
        started = time.perf_counter()
        assert run_agent({"sleep_s": 0}, cwd=tmp_path).returncode == 0
        timings_ms.append((time.perf_counter() - started) * 1000)

    print(f"scripted agent start-to-exit: median {statistics.median(timings_ms):.0f} ms over 5 runs")  # noqa: T201 - the number is the point
    assert statistics.median(timings_ms) < 2000  # generous: shared CI machines are noisy

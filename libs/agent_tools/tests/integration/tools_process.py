"""Run the installed ``agent-grid-tools`` console script as a separate process, as an agent would."""

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

TOOLS_SCRIPT = Path(sys.executable).with_name("agent-grid-tools")
_PROCESS_TIMEOUT_S = 30


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> Any:
        return json.loads(self.stderr)


async def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Completed:
    assert TOOLS_SCRIPT.exists(), f"{TOOLS_SCRIPT} is missing: run uv sync --all-packages"
    process = await asyncio.create_subprocess_exec(
        TOOLS_SCRIPT,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(_PROCESS_TIMEOUT_S):
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def mcp_session(env: dict[str, str], errlog: Path) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with ``agent-grid-tools mcp`` spawned over stdio."""
    server = StdioServerParameters(command=str(TOOLS_SCRIPT), args=["mcp"], env=env)
    with errlog.open("w") as log:
        async with stdio_client(server, errlog=log) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session

"""A response that waits for the server's stop ends when uvicorn begins to stop, so the stop does not hang."""

import asyncio
from collections.abc import AsyncIterator

import httpx
from agent_grid_runtime.public_broker import find_free_port
from agent_grid_runtime.public_http import serve_http
from agent_grid_runtime.public_stopping import server_stopping
from fastapi import FastAPI
from fastapi.responses import StreamingResponse


def streaming_app() -> FastAPI:
    app = FastAPI()
    stopping = server_stopping(app)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"open\n"
            await stopping.wait()
            yield b"closing\n"

        return StreamingResponse(body(), media_type="text/plain")

    return app


async def wait_until_listening(client: httpx.AsyncClient, url: str) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await client.get(url)
                return
            except httpx.ConnectError:
                await asyncio.sleep(0.05)


async def test_an_open_stream_ends_when_the_server_begins_to_stop() -> None:
    app = streaming_app()
    port = find_free_port()
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_http(app, host="127.0.0.1", port=port, stop=stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await wait_until_listening(client, "/docs")
        async with client.stream("GET", "/stream") as response:
            lines = response.aiter_lines()
            assert await anext(lines) == "open"
            stop.set()
            # serve_http configures no graceful-shutdown timeout: without the stopping event this waits forever.
            async with asyncio.timeout(5):
                rest = [line async for line in lines]
                await serving

    assert rest == ["closing"]

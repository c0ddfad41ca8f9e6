"""``agent-grid-github-test-server``: serve a :class:`FakeGitHub` for the local demo (no GitHub account).

    agent-grid-github-test-server --port 8765 --seed seed.json

Seed documents are described in ``seeding.py``; state can also be seeded later through ``/_control/seed``.
uvicorn owns the process and its signals (Ctrl-C stops it).
"""

import argparse
import json
from pathlib import Path

import structlog
import uvicorn

from agent_grid_github_test_server.public_server import FakeGitHub, bind_socket, create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agent-grid-github-test-server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (logged at startup)")
    parser.add_argument("--web-url", help="where html_url links point (default: the server itself)")
    parser.add_argument("--seed", type=Path, help="a JSON seed document applied before serving")
    args = parser.parse_args(argv)

    github = FakeGitHub()
    if args.seed is not None:
        github.seed(json.loads(args.seed.read_text()))
    sock = bind_socket(args.host, args.port)
    base_url = f"http://{args.host}:{sock.getsockname()[1]}/"
    app = create_app(github, base_url=base_url, web_url=args.web_url)
    structlog.get_logger("agent_grid_github_test_server").info(
        "github_test_server_listening", base_url=base_url, graphql_url=f"{base_url}graphql"
    )
    # uvicorn's own logging (stderr, with an access log): this is a developer's tool, not a service.
    uvicorn.Server(uvicorn.Config(app, ws="none")).run(sockets=[sock])


if __name__ == "__main__":
    main()

"""``agent-grid``: the umbrella CLI. Talks to the grid through its queues, like any other producer."""

import asyncio
import json
from typing import Annotated

import typer
from agent_grid_contracts.public_codec import decode
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import Actor, ActorKind, parse_issue_ref
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_runtime.public_broker import BrokerError, EmbeddedBroker
from agent_grid_runtime.public_logging import configure_logging
from agent_grid_runtime.public_queues import QueueName, queue_names, resolve_queues
from agent_grid_runtime.public_sqs import Publisher
from agent_grid_runtime.public_transport import TransportError, open_sqs_transport

from agent_grid_cli.local_grid import run_local_grid
from agent_grid_cli.operations import add_operator_commands
from agent_grid_cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="agent-grid: GitHub issues in, autonomous agent runs out.")
broker_app = typer.Typer(no_args_is_help=True, help="The embedded SQS broker (LocalStack) for local runs and tests.")
app.add_typer(broker_app, name="broker")


def _settings() -> CliSettings:
    settings = CliSettings()
    # A one-shot command gains nothing from caching loggers, and caching would leak into in-process callers.
    configure_logging(settings.log.level, settings.log.format, cache_loggers=False)
    return settings


def _broker(settings: CliSettings, port: int | None = None) -> EmbeddedBroker:
    port = port or settings.broker_port
    # Named by port: brokers on different ports never share a pid or log file.
    return EmbeddedBroker(
        home=settings.home / "broker", requirements=settings.broker_requirements, port=port, name=f"port-{port}"
    )


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def nudge(
    issue: Annotated[str, typer.Argument(help="OWNER/REPO#NUMBER")],
    reason: Annotated[NudgeReason, typer.Option(help="Why the issue deserves a look.")] = NudgeReason.MANUAL,
    detail: Annotated[str | None, typer.Option(help="Free text for the coordinator's logs.")] = None,
    actor: Annotated[str, typer.Option(envvar="USER", help="Who is nudging (a GitHub login).")] = "cli",
) -> None:
    """Put a Nudge for ISSUE on the nudges queue."""
    settings = _settings()
    try:
        ref = parse_issue_ref(issue)
    except ValueError as error:
        raise _fail(str(error)) from None
    envelope = wrap(
        Nudge(
            issue=ref,
            reason=reason,
            source=NudgeSource.HUMAN,
            detail=detail,
            actor=Actor(login=actor, kind=ActorKind.HUMAN),
        ),
        producer="agent-grid-cli",
    )

    async def send() -> None:
        async with open_sqs_transport(settings.aws) as transport:
            queues = await resolve_queues(transport, settings.queues)
            await Publisher(transport=transport, queue_url=queues.nudges.url, max_attempts=3).publish(envelope)

    try:
        asyncio.run(send())
    except TransportError as error:
        raise _fail(f"broker unreachable at {settings.aws.endpoint_url or 'AWS'}: {error}") from None
    typer.echo(f"nudged {ref} (message {envelope.message_id})")


@app.command()
def queues() -> None:
    """Show the depth of every queue and dead-letter queue."""
    settings = _settings()

    async def depths() -> list[tuple[str, int, int, int]]:
        rows = []
        async with open_sqs_transport(settings.aws) as transport:
            urls = await resolve_queues(transport, settings.queues)
            for name in QueueName:
                pair = urls.pair(name)
                work_name, dead_letter_name = queue_names(settings.queues, name)
                for physical, url in ((work_name, pair.url), (dead_letter_name, pair.dead_letter_url)):
                    depth = await transport.depth(url)
                    rows.append((physical, depth.visible, depth.in_flight, depth.delayed))
        return rows

    try:
        rows = asyncio.run(depths())
    except TransportError as error:
        raise _fail(f"broker unreachable at {settings.aws.endpoint_url or 'AWS'}: {error}") from None
    typer.echo(f"{'queue':<32} {'visible':>8} {'in flight':>10} {'delayed':>8}")
    for physical, visible, in_flight, delayed in rows:
        typer.echo(f"{physical:<32} {visible:>8} {in_flight:>10} {delayed:>8}")


@app.command()
def bootstrap() -> None:
    """Create the queues and their dead-letter queues (idempotent)."""
    settings = _settings()

    async def run() -> None:
        async with open_sqs_transport(settings.aws) as transport:
            urls = await resolve_queues(transport, settings.queues.model_copy(update={"bootstrap": True}))
            for name in QueueName:
                typer.echo(f"{name.value}: {urls.pair(name).url} (dead letters: {urls.pair(name).dead_letter_url})")

    try:
        asyncio.run(run())
    except TransportError as error:
        raise _fail(f"broker unreachable at {settings.aws.endpoint_url or 'AWS'}: {error}") from None


@app.command("dead-letters")
def dead_letters(
    queue: Annotated[QueueName, typer.Argument(help="Which queue's dead letters.")],
    limit: Annotated[int, typer.Option(min=1, max=10)] = 10,
) -> None:
    """Peek at dead letters with their reasons (they become visible again after 30 s)."""
    settings = _settings()

    async def peek() -> None:
        async with open_sqs_transport(settings.aws) as transport:
            urls = await resolve_queues(transport, settings.queues)
            messages = await transport.receive(
                urls.pair(queue).dead_letter_url, max_messages=limit, wait_time_s=1, visibility_timeout_s=30
            )
            for message in messages:
                reason = message.attributes.get("dead_letter_reason", "redriven by SQS after max receives")
                typer.echo(
                    json.dumps({"reason": reason, "receive_count": message.receive_count, "body": message.body[:500]})
                )
            if not messages:
                typer.echo("no dead letters visible")

    asyncio.run(peek())


@app.command("validate")
def validate(path: Annotated[typer.FileText, typer.Argument(help="A JSON message file, or - for stdin.")]) -> None:
    """Check that a message is a valid agent-grid envelope, as a consumer would."""
    from agent_grid_contracts.public_codec import ContractError

    try:
        envelope = decode(path.read())
    except ContractError as error:
        raise _fail(error.reason) from None
    typer.echo(f"valid {envelope.kind} v{envelope.schema_version} (message {envelope.message_id})")


@app.command("run-local")
def run_local(
    keep_broker: Annotated[bool, typer.Option(help="Leave the broker running on exit.")] = False,
    demo: Annotated[bool, typer.Option(help="Open the demo issues once the grid is up, and narrate.")] = True,
) -> None:
    """Run the whole grid as local processes on the embedded broker (what `make run` does)."""
    settings = _settings()
    try:
        code = run_local_grid(_broker(settings), keep_broker=keep_broker, demo=demo)
    except BrokerError as error:
        raise _fail(str(error)) from None
    raise typer.Exit(code=code)


@broker_app.command("install")
def broker_install() -> None:
    """Create the broker's own Python 3.13 environment from deploy/broker/requirements.txt."""
    try:
        _broker(_settings()).install()
    except BrokerError as error:
        raise _fail(str(error)) from None
    typer.echo("broker environment ready")


@broker_app.command("start")
def broker_start(
    port: Annotated[int | None, typer.Option(help="Defaults to AGENT_GRID_BROKER_PORT or 4566.")] = None,
) -> None:
    """Start the broker in the background and wait until it answers."""
    broker = _broker(_settings(), port)
    try:
        started = broker.start()
    except BrokerError as error:
        raise _fail(str(error)) from None
    state = "started" if started else "already running"
    typer.echo(f"broker {state} at {broker.endpoint_url} (log: {broker.log_path})")


@broker_app.command("stop")
def broker_stop(port: Annotated[int | None, typer.Option()] = None) -> None:
    """Stop the broker started by `broker start`."""
    _broker(_settings(), port).stop()
    typer.echo("broker stopped")


@broker_app.command("status")
def broker_status(port: Annotated[int | None, typer.Option()] = None) -> None:
    """Say whether the broker answers."""
    broker = _broker(_settings(), port)
    if not broker.is_healthy():
        raise _fail(f"no broker answering at {broker.endpoint_url}")
    typer.echo(f"broker healthy at {broker.endpoint_url}")


add_operator_commands(app, _settings)

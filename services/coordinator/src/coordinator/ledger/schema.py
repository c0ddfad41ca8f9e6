"""The ledger's tables and their migrations (SQLAlchemy Core: one definition for SQLite and PostgreSQL).

Decision cost must stay flat as history grows, so nothing a decision reads scans history: active runs
are found through a partial index, and per-issue, per-tree and per-repo-day figures are kept as running
totals updated in the same transaction as the run they come from.
"""

from collections.abc import Awaitable, Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

ACTIVE_STATES = ("launching", "running")

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("issue_key", sa.String(200), nullable=False),
    sa.Column("repo", sa.String(200), nullable=False),
    sa.Column("root_key", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("agent_kind", sa.String(40), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("authorised_by", sa.String(100), nullable=False),
    sa.Column("trigger_message_id", sa.String(100)),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("exit_reason", sa.String(40)),
    sa.Column("worker_id", sa.String(128)),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("summary", sa.Text),
    # Sub-issues the run created through the agent tools, against ``max_sub_issues_per_run`` (migration 2).
    sa.Column("sub_issues_created", sa.Integer, nullable=False, default=0, server_default="0"),
    # Where the grid worker serves the run's log (its AgentStarted's log_url), for the API's log proxy (migration 4).
    sa.Column("log_url", sa.Text),
    # What the run was allotted of its tree's budget (its launch's limits): while it is active, what it has not
    # spent of them is not left for another run of the tree (migration 6; None for runs launched before).
    sa.Column("max_cost_usd", sa.Float),
    sa.Column("max_tokens", sa.BigInteger),
    # The lease: at most one active run per issue, enforced by the database for every coordinator.
    sa.Index(
        "runs_one_active_per_issue",
        "issue_key",
        unique=True,
        sqlite_where=sa.text("state IN ('launching', 'running')"),
        postgresql_where=sa.text("state IN ('launching', 'running')"),
    ),
    sa.Index(
        "runs_active",
        "state",
        "repo",
        "root_key",
        "agent_kind",
        sqlite_where=sa.text("state IN ('launching', 'running')"),
        postgresql_where=sa.text("state IN ('launching', 'running')"),
    ),
    sa.Index("runs_by_issue", "issue_key", "created_at"),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

issues = sa.Table(
    "issue_totals",
    metadata,
    sa.Column("issue_key", sa.String(200), primary_key=True),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, default=0),
    # Set by a management run, cleared when the parent is found closed: the parents to resume on a timer.
    sa.Column("last_manage_started_at", sa.DateTime(timezone=True), index=True),
    # When the newest nudge that had to wait for a run in flight was sent: re-decided when the run ends,
    # if it came after the run began (the nudge that started the run, repeated, is no news).
    sa.Column("pending_since", sa.DateTime(timezone=True), index=True),
    # Who asked (the nudge's actor, as JSON): a deferred request keeps the trust of the person who made it.
    sa.Column("pending_actor", sa.Text),
)

trees = sa.Table(
    "tree_totals",
    metadata,
    sa.Column("root_key", sa.String(200), primary_key=True),
    sa.Column("authorised_by", sa.String(100)),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("killed", sa.Boolean, nullable=False, default=False),
    # The tree's size (issues, the root included) with the sub-issues its runs reserved through the agent tools:
    # each reservation raises it to the larger of itself and GitHub's count, plus the request, and only within
    # max_tree_size, so concurrent requests in one tree cannot both slip under the cap (migration 7).
    sa.Column("size_reserved", sa.Integer, nullable=False, default=0, server_default="0"),
)

repo_days = sa.Table(
    "repo_day_totals",
    metadata,
    sa.Column("repo", sa.String(200), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    # Today's totals of every repository, for the metrics: the primary key leads with the repository (migration 4).
    sa.Index("repo_day_totals_by_day", "day"),
)

settings_table = sa.Table(
    "ledger_flags",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("value", sa.Boolean, nullable=False),
)

# The write-behind outbox of tracker (GitHub) writes: the state agent-grid wants an issue to show, written by
# a background writer at the tracker's pace, off the handlers' path. One row per issue and key (the status
# comment, an assignee, a label, the roll-up block), so a newer wish replaces an unwritten older one: only
# the latest status is ever written. Rows are added in the transaction that decided them, so a restart loses
# none (migration 3).
tracker_writes = sa.Table(
    "tracker_writes",
    metadata,
    sa.Column("issue_key", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    # Bumped by every newer wish: a writer completes (deletes) only the version it wrote.
    sa.Column("version", sa.BigInteger, nullable=False, default=1),
    # When the oldest unwritten wish of this row was made (the backlog's age).
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
    # Not before: now for a new wish, later after a failure (capped backoff) or a rate limit.
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    # A writer's claim (several coordinators may share the ledger); a claim that outlives its writer expires.
    sa.Column("claimed_by", sa.String(40)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    # Set when the writer gave the wish up after too many failed attempts (a poison wish): never claimed again,
    # shown by GET /api/outbox, until a newer wish of the row replaces it (migration 5).
    sa.Column("parked_at", sa.DateTime(timezone=True)),
    sa.Index("tracker_writes_due", "due_at"),
)

# The outbox of a finished run's follow-ups: recorded in the transaction that ends the run, made (published, or
# decided at once) after it, and forgotten only once made, so a failed publish, a cancelled handler or a crash in
# between loses none (a repeated exit, or the sweep once ``due_at`` passes, makes them again). Each is a nudge
# (``kind`` "issue": the run's issue again, "released": a nudge that waited for a slot elsewhere) or "successors":
# the issue's next sibling and parent, found on the tracker when the follow-up is made (migration 8).
follow_ups = sa.Table(
    "run_follow_ups",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("issue_key", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    # Who the nudge is made for (the waiting nudge's sender, as JSON): a deferred request keeps its sender's trust.
    sa.Column("actor", sa.Text),
    # When the sweep makes it, if whoever recorded it has not by then (it is pushed back each time it is taken).
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

schema_versions = sa.Table(
    "schema_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

type Migration = Callable[[AsyncConnection], Awaitable[None]]


async def _initial(connection: AsyncConnection) -> None:
    await connection.run_sync(
        lambda sync: metadata.create_all(
            sync, tables=[runs, run_events, issues, trees, repo_days, settings_table], checkfirst=True
        )
    )


async def _sub_issues_per_run(connection: AsyncConnection) -> None:
    # `_initial` creates the tables from today's definitions, so a ledger created after this migration was
    # written already has the column: only older ledgers get it added.
    columns = await connection.run_sync(lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("runs")})
    if "sub_issues_created" not in columns:
        await connection.execute(sa.text("ALTER TABLE runs ADD COLUMN sub_issues_created INTEGER NOT NULL DEFAULT 0"))


async def _tracker_writes(connection: AsyncConnection) -> None:
    await connection.run_sync(lambda sync: tracker_writes.create(sync, checkfirst=True))


async def _run_log_urls(connection: AsyncConnection) -> None:
    # As in migration 2: a ledger `_initial` created from today's definitions has both already.
    columns = await connection.run_sync(lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("runs")})
    if "log_url" not in columns:
        await connection.execute(sa.text("ALTER TABLE runs ADD COLUMN log_url TEXT"))
    by_day = next(index for index in repo_days.indexes if index.name == "repo_day_totals_by_day")
    await connection.run_sync(lambda sync: by_day.create(sync, checkfirst=True))


async def _parked_tracker_writes(connection: AsyncConnection) -> None:
    # As in migration 2: a ledger `_tracker_writes` created from today's definitions has the column already.
    columns = await connection.run_sync(
        lambda sync: {column["name"] for column in sa.inspect(sync).get_columns("tracker_writes")}
    )
    if "parked_at" not in columns:
        await connection.execute(sa.text("ALTER TABLE tracker_writes ADD COLUMN parked_at TIMESTAMP WITH TIME ZONE"))


async def _run_allotments(connection: AsyncConnection) -> None:
    # As in migration 2: a ledger `_initial` created from today's definitions has them already.
    columns = await connection.run_sync(
        lambda sync: {column["name"] for column in sa.inspect(sync).get_columns("runs")}
    )
    if "max_cost_usd" not in columns:
        await connection.execute(sa.text("ALTER TABLE runs ADD COLUMN max_cost_usd FLOAT"))
    if "max_tokens" not in columns:
        await connection.execute(sa.text("ALTER TABLE runs ADD COLUMN max_tokens BIGINT"))


async def _tree_size_reservations(connection: AsyncConnection) -> None:
    # As in migration 2: a ledger `_initial` created from today's definitions has it already.
    columns = await connection.run_sync(
        lambda sync: {column["name"] for column in sa.inspect(sync).get_columns("tree_totals")}
    )
    if "size_reserved" not in columns:
        await connection.execute(sa.text("ALTER TABLE tree_totals ADD COLUMN size_reserved INTEGER NOT NULL DEFAULT 0"))


async def _run_follow_ups(connection: AsyncConnection) -> None:
    await connection.run_sync(lambda sync: follow_ups.create(sync, checkfirst=True))


# Append only: a migration, once released, never changes.
MIGRATIONS: Sequence[Migration] = (
    _initial,
    _sub_issues_per_run,
    _tracker_writes,
    _run_log_urls,
    _parked_tracker_writes,
    _run_allotments,
    _tree_size_reservations,
    _run_follow_ups,
)

from typing import Annotated

from agent_grid_runtime.public_settings import (
    BaseServiceSettings,
    ConsumerSettings,
    HttpSettings,
    service_settings_config,
)
from agent_grid_tracker.public_github import GitHubSettings
from pydantic import Field

from coordinator.api.public_api import ApiSettings
from coordinator.api.public_run_logs import GridApiSettings
from coordinator.dashboard.public_dashboard import DashboardSettings
from coordinator.decisions.public_policy import Policy
from coordinator.handling.public_outbox import OutboxSettings
from coordinator.handling.public_records import RecordsSettings
from coordinator.tools.public_api import ToolsSettings


class NudgeConsumerSettings(ConsumerSettings):
    """The nudge consumer: as any consumer, but with a backlog it receives and deletes in fuller batches.

    Waiting up to 20 ms for company costs a nudge little next to its decision, and saves most of the calls: with
    20 in flight, receives and deletes averaged three messages a call, and the broker calls' CPU (botocore,
    aiohttp) was a third of the coordinator's (make bench-coordinator). Without a backlog nothing waits.
    """

    batch_linger_s: Annotated[float, Field(ge=0, le=1)] = 0.02


class Settings(BaseServiceSettings):
    """Coordinator settings; every variable starts with ``COORDINATOR_`` (e.g. ``COORDINATOR_HTTP__PORT``)."""

    model_config = service_settings_config("COORDINATOR_")

    http: HttpSettings = HttpSettings(port=8002)
    nudge_consumer: NudgeConsumerSettings = NudgeConsumerSettings()
    lifecycle_consumer: ConsumerSettings = ConsumerSettings()
    # The rules: opt-in, trust, caps (COORDINATOR_POLICY__CAPS__MAX_ACTIVE_RUNS=…), management timing.
    policy: Policy = Policy()
    # The tracker's credentials (COORDINATOR_GITHUB__TOKEN or __APP__…): without them nothing can be decided.
    github: GitHubSettings | None = None
    # SQLite by default; postgresql+asyncpg://… in production.
    ledger_url: str = "sqlite+aiosqlite:///.local/coordinator/ledger.sqlite3"
    # A run not heard from (no start, heartbeat or exit) for this long is declared lost and its lease released.
    lost_after_s: Annotated[float, Field(gt=0)] = 600.0
    sweep_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # The writer of GitHub writes (status comments, assignees, labels, roll-ups) from the ledger's outbox.
    outbox: OutboxSettings = OutboxSettings()
    # The /api bearer token (COORDINATOR_API__TOKEN); unset refuses every /api call.
    api: ApiSettings = ApiSettings()
    # The grid workers' API, for run logs through /api/runs/{id}/log: their token (COORDINATOR_GRID_API__TOKEN,
    # the workers' EXECUTION_GRID_API_TOKEN) and the addresses a log URL may point to.
    grid_api: GridApiSettings = GridApiSettings()
    # How long /metrics reuses its read of the ledger (runs by state, spend): scrapes stay cheap however frequent.
    metrics_max_age_s: Annotated[float, Field(ge=0)] = 5.0
    # The dashboard at /dashboard (signs in with the API token): sessions, the event stream's polling.
    dashboard: DashboardSettings = DashboardSettings()
    # The agent tools (/tools/v1): the run token secret shared with the grid workers
    # (COORDINATOR_TOOLS__RUN_TOKEN_SECRET, at least 16 bytes); unset answers every tools call 503.
    tools: ToolsSettings = ToolsSettings()
    # The key agent-grid's records on GitHub (status comments, roll-ups) are signed with, so a lost ledger is
    # rebuilt only from its own (COORDINATOR_RECORDS__SECRET, at least 16 bytes); unset, derived from the
    # tracker's credential.
    records: RecordsSettings = RecordsSettings()

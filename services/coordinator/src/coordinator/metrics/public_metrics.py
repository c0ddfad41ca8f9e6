"""The coordinator's metrics: what it decides (counters) and what its ledger holds (gauges, read when scraped).

The handling counts its decisions and run ends through :class:`CoordinatorCounters`; the composition root
registers both on the service's registry, whose ``/metrics`` an operator alerts on. Metric names are part of
operators' alert rules: backward-compatible changes only.
"""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from agent_grid_contracts.public_lifecycle import ExitReason
from prometheus_client import CollectorRegistry, Counter, Gauge

from coordinator.decisions.public_policy import Caps
from coordinator.decisions.public_verdicts import Ignore, Launch, Refuse, Verdict, Wait, WaitReason
from coordinator.ledger.public_stats import LedgerStats

__all__ = ["BUDGET_EXHAUSTED", "CIRCUIT_BREAKER", "CoordinatorCounters", "LedgerGauges"]

BUDGET_EXHAUSTED = "budget_exhausted"
"""Escalation cause: a run stopped at its budget (a retry would spend as much again)."""
CIRCUIT_BREAKER = "circuit_breaker"
"""Escalation cause: failed runs in a row on one issue."""

_log = structlog.get_logger(__name__)


class CoordinatorCounters:
    """Counters of decisions, refusals, escalations and run ends, on ``registry`` (a private one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create the counters, every known label value at zero (a ``rate()`` then sees the first increment)."""
        registry = registry or CollectorRegistry()
        self._decisions = Counter(
            "agent_grid_decisions_total", "Nudges decided, by verdict.", ["verdict"], registry=registry
        )
        self._waits = Counter("agent_grid_waits_total", "Launches postponed, by reason.", ["reason"], registry=registry)
        self._refusals = Counter(
            "agent_grid_refusals_total",
            "Launches refused, by the cap (or kill switch) that refused them.",
            ["cap"],
            registry=registry,
        )
        self._escalations = Counter(
            "agent_grid_escalations_total",
            "Issues handed to a human (needs-human), by cause: a cap's name, budget_exhausted or circuit_breaker.",
            ["cause"],
            registry=registry,
        )
        self._ended = Counter(
            "agent_grid_runs_ended_total",
            "Runs that reached their terminal state, by exit reason.",
            ["reason"],
            registry=registry,
        )
        self._lost = Counter(
            "agent_grid_runs_declared_lost_total",
            "Runs declared lost because nothing was heard from them for COORDINATOR_LOST_AFTER_S.",
            registry=registry,
        )
        for verdict in ("launch", "wait", "refuse", "ignore"):
            self._decisions.labels(verdict)
        for wait in WaitReason:
            self._waits.labels(wait.value)
        for reason in ExitReason:
            self._ended.labels(reason.value)
        for cause in (BUDGET_EXHAUSTED, CIRCUIT_BREAKER):
            self._escalations.labels(cause)

    def decided(self, verdict: Verdict) -> None:
        """Count one decision; a refusal also by its cap, and as an escalation when it hands the issue over."""
        match verdict:
            case Launch():
                self._decisions.labels("launch").inc()
            case Wait():
                self._decisions.labels("wait").inc()
                self._waits.labels(verdict.reason.value).inc()
            case Refuse():
                self._decisions.labels("refuse").inc()
                self._refusals.labels(verdict.cap).inc()
                if verdict.escalate:
                    self._escalations.labels(verdict.cap).inc()
            case Ignore():
                self._decisions.labels("ignore").inc()

    def run_ended(self, reason: ExitReason, *, escalated_for: str | None = None) -> None:
        """Count a run's end (once: the ledger's first end), and its escalation's cause if it had one."""
        self._ended.labels(reason.value).inc()
        if escalated_for is not None:
            self._escalations.labels(escalated_for).inc()

    def declared_lost(self, count: int) -> None:
        """Count runs the sweep declared lost."""
        self._lost.inc(count)


class LedgerGauges:
    """Gauges of the ledger's state, read at most every ``max_age_s`` and never longer than ``timeout_s``.

    A ledger that fails or does not answer in time clears them (no stale figures) and sets
    ``agent_grid_ledger_up`` to 0; the failure is cached like a success, so a scrape waits at most once per
    ``max_age_s``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        stats: LedgerStats,
        caps: Caps,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_age_s: float = 5.0,
        timeout_s: float = 2.0,
    ) -> None:
        """Register the gauges on ``registry``; the caps' gauges are set once (they change with a restart)."""
        self._stats = stats
        self._clock = clock
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._active = Gauge("agent_grid_active_runs", "Active runs, by state.", ["state"], registry=registry)
        self._repo_spend = Gauge(
            "agent_grid_repo_spend_today_usd",
            "Spend of each repository's runs that ended today (UTC), as the daily cap counts it.",
            ["repo"],
            registry=registry,
        )
        self._tree_spend = Gauge(
            "agent_grid_tree_spend_usd",
            "Spend of each tree with active runs: its finished runs plus what its active runs reported.",
            ["root"],
            registry=registry,
        )
        self._paused = Gauge(
            "agent_grid_paused", "1 while every launch is paused (POST /api/pause).", registry=registry
        )
        self._outbox_pending = Gauge(
            "agent_grid_outbox_pending_writes",
            "GitHub writes (status comments, assignees, labels, roll-ups) decided and not yet written.",
            registry=registry,
        )
        self._outbox_parked = Gauge(
            "agent_grid_outbox_parked_writes",
            "GitHub writes given up after too many failed attempts (GET /api/outbox lists them); alert on > 0.",
            registry=registry,
        )
        self._up = Gauge(
            "agent_grid_ledger_up",
            "1 when the latest read of the ledger's gauges succeeded, else 0.",
            registry=registry,
        )
        Gauge("agent_grid_repo_daily_budget_usd", "The daily cost cap of each repository.", registry=registry).set(
            caps.max_cost_usd_per_repo_per_day
        )
        Gauge("agent_grid_tree_budget_usd", "The cost cap of each issue tree.", registry=registry).set(
            caps.max_cost_usd_per_tree
        )

    async def refresh(self) -> None:
        """Bring the gauges up to date unless they are younger than ``max_age_s`` (a ``/metrics`` scrape hook)."""
        async with self._lock:
            if self._read_at is not None and time.monotonic() - self._read_at < self._max_age_s:
                return
            try:
                async with asyncio.timeout(self._timeout_s):
                    view = await self._stats.read(today=self._clock().astimezone(UTC).date())
            except Exception as error:  # the database is away or slow: say so instead of failing the scrape
                _log.warning("ledger_gauges_unavailable", error=str(error) or type(error).__name__)
                for gauge in (self._active, self._repo_spend, self._tree_spend):
                    gauge.clear()
                for unknown in (self._outbox_pending, self._outbox_parked):
                    unknown.set(float("nan"))  # no stale figures
                self._up.set(0)
            else:
                for state, count in view.active_runs.items():
                    self._active.labels(state).set(count)
                # Replaced wholesale: a repository from yesterday, or a tree whose runs all ended, must not linger.
                self._repo_spend.clear()
                for repo, spent in view.repo_spend_today_usd.items():
                    self._repo_spend.labels(repo).set(spent)
                self._tree_spend.clear()
                for root, spent in view.active_tree_spend_usd.items():
                    self._tree_spend.labels(root).set(spent)
                self._paused.set(1 if view.paused else 0)
                self._outbox_pending.set(view.outbox_pending)
                self._outbox_parked.set(view.outbox_parked)
                self._up.set(1)
            self._read_at = time.monotonic()

"""What an operator watches in the ledger: active runs, spend against the budgets, the pause switch, the outbox.

Read by the coordinator's metrics when ``/metrics`` is scraped (``Ledger.stats``). Like a decision's read, it
touches only the active runs (through their partial index) and the running totals, never the history.
"""

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.ledger.schema import ACTIVE_STATES, repo_days, runs, settings_table, tracker_writes, trees

__all__ = ["LedgerStats", "OperatorView"]

# Literal, not bound: a planner can only use the partial indexes when it sees the same predicate they have.
_ACTIVE = sa.text("runs.state IN ('launching', 'running')")


@dataclass(frozen=True)
class OperatorView:
    """The ledger's state as an operator watches it.

    Active runs per state; finished runs' spend per repository today (what the daily cap is checked against);
    each tree with active runs, its spend so far (finished runs plus what active ones reported, what the tree
    cap is checked against); whether launches are paused; and the outbox's GitHub writes not yet written and
    those parked (given up after too many failed attempts).
    """

    active_runs: dict[str, int]
    repo_spend_today_usd: dict[str, float]
    active_tree_spend_usd: dict[str, float]
    paused: bool
    outbox_pending: int = 0
    outbox_parked: int = 0


class LedgerStats:
    """Reads of the ledger for operators."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap the ledger's engine."""
        self._engine = engine

    async def read(self, *, today: date) -> OperatorView:
        """One look at the active runs, today's repository totals and the active trees' totals."""
        async with self._engine.connect() as connection:
            by_state = await connection.execute(
                sa.select(runs.c.state, sa.func.count()).where(_ACTIVE).group_by(runs.c.state)
            )
            active_runs = dict.fromkeys(ACTIVE_STATES, 0) | {state: int(count) for state, count in by_state}
            spent_today = await connection.execute(
                sa.select(repo_days.c.repo, repo_days.c.cost_usd).where(repo_days.c.day == today)
            )
            active = (
                sa.select(runs.c.root_key, sa.func.sum(runs.c.cost_usd).label("cost_usd"))
                .where(_ACTIVE)
                .group_by(runs.c.root_key)
                .subquery()
            )
            tree_spend = await connection.execute(
                sa.select(active.c.root_key, active.c.cost_usd + sa.func.coalesce(trees.c.cost_usd, 0.0)).select_from(
                    active.outerjoin(trees, trees.c.root_key == active.c.root_key)
                )
            )
            paused = await connection.scalar(sa.select(settings_table.c.value).where(settings_table.c.name == "paused"))
            parked_at = tracker_writes.c.parked_at
            outbox = await connection.execute(
                sa.select(
                    sa.func.sum(sa.case((parked_at.is_(None), 1), else_=0)),
                    sa.func.sum(sa.case((parked_at.is_(None), 0), else_=1)),
                )
            )
            pending, parked = outbox.one()
            return OperatorView(
                active_runs=active_runs,
                repo_spend_today_usd={repo: float(cost) for repo, cost in spent_today},
                active_tree_spend_usd={root: float(cost or 0.0) for root, cost in tree_spend},
                paused=bool(paused),
                outbox_pending=int(pending or 0),
                outbox_parked=int(parked or 0),
            )

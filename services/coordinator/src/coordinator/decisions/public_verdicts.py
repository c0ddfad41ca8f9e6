"""What the coordinator decided about one issue. Exactly one verdict per decision."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from agent_grid_contracts.public_launches import RunMode

__all__ = ["Ignore", "Launch", "Refuse", "Verdict", "Wait", "WaitReason"]


@dataclass(frozen=True)
class Launch:
    """Start a run. ``authorised_by`` is the trusted human whose word it runs on (recorded for the tree).

    ``resets_failures``: a person handed the issue back, so its failed runs in a row start again from zero.
    """

    mode: RunMode
    agent_kind: str
    authorised_by: str
    max_cost_usd: float
    max_tokens: int
    resets_failures: bool = False


class WaitReason(StrEnum):
    """Why a launch is postponed; the nudge is remembered and the issue re-decided when this may have changed."""

    PAUSED = "paused"
    RUN_IN_FLIGHT = "run_in_flight"
    BLOCKED = "blocked"
    EARLIER_SIBLING_OPEN = "earlier_sibling_open"
    RESUMED_RECENTLY = "resumed_recently"
    CONCURRENCY = "concurrency"
    # What is left of the tree's cost or token budget is allotted to its runs in flight.
    TREE_BUDGET_ALLOTTED = "tree_budget_allotted"
    REPO_DAILY_BUDGET = "repo_daily_budget"


@dataclass(frozen=True)
class Wait:
    """Not now. ``not_before`` when the wait has a known end (the next allowed resumption, the next day)."""

    reason: WaitReason
    detail: str
    not_before: datetime | None = None


@dataclass(frozen=True)
class Refuse:
    """A cap or the kill switch forbids the launch: say so on the issue; ``escalate`` hands it to a human."""

    cap: str
    detail: str
    escalate: bool


@dataclass(frozen=True)
class Ignore:
    """Not agent-grid's business (closed, not opted in, untrusted, a human's): nothing visible happens.

    ``needs_authoriser``: an agent-grid trigger in an opted-in tree with no authoriser yet; the adapter may look
    on GitHub for who authorised it (``IssueFacts.authoriser_candidates``) and decide again.
    """

    reason: str
    needs_authoriser: bool = False


type Verdict = Launch | Wait | Refuse | Ignore

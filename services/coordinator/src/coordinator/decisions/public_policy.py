"""The rules the coordinator decides by: opt-in, trust, caps and management timing (settings sections).

Every cap is enforced before a launch. Defaults are deliberately small: a new install spends little until
an operator raises them.
"""

from typing import Annotated

from agent_grid_contracts.public_issues import AuthorAssociation
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Caps", "ManagementPolicy", "OptInPolicy", "Policy", "TrustPolicy"]

_Count = Annotated[int, Field(ge=0)]
_Money = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True)


class OptInPolicy(_Section):
    """When an issue is agent-grid's to work on.

    It (or its tree's root) carries ``label``, it is assigned to the bot account, or its repository is
    listed in ``repos``.
    """

    label: str = "agent-grid"
    repos: frozenset[str] = frozenset()


class TrustPolicy(_Section):
    """Whose word starts a run: these author associations, or a login on the allow-list.

    Where no association is at hand (a polled change names no one; a ledger rebuilt from GitHub), the person
    found on GitHub (who applied the opt-in label, the recorded authoriser) counts with one of
    ``trusted_permissions`` on the repository (GitHub's roles: admin, maintain, write, triage, read), or on the
    allow-list.
    """

    trusted_associations: frozenset[AuthorAssociation] = frozenset(
        {AuthorAssociation.OWNER, AuthorAssociation.MEMBER, AuthorAssociation.COLLABORATOR}
    )
    allow_list: frozenset[str] = frozenset()
    trusted_permissions: frozenset[str] = frozenset({"admin", "maintain", "write"})

    def trusts(self, login: str, association: AuthorAssociation) -> bool:
        """Whether a person's word counts: a trusted association with the repository, or the allow-list."""
        return association in self.trusted_associations or login in self.allow_list

    def trusts_permission(self, login: str, permission: str) -> bool:
        """Whether a person found on GitHub counts: a trusted role on the repository, or the allow-list."""
        return permission in self.trusted_permissions or login in self.allow_list


class Caps(_Section):
    """Every limit checked before a launch. Counts of active runs, runs, fan-out, cost and tokens."""

    max_active_runs: _Count = 4
    max_active_runs_per_repo: _Count = 2
    max_active_runs_per_tree: _Count = 2
    # Per agent kind, e.g. {"claude_code": 2}; a kind not listed is bounded by the other caps only.
    max_active_runs_per_agent_kind: dict[str, int] = Field(default_factory=dict)
    max_runs_per_issue: _Count = 5
    max_runs_per_tree: _Count = 40
    max_sub_issues_per_run: _Count = 10
    max_tree_depth: _Count = 3
    max_tree_size: _Count = 50
    max_cost_usd_per_run: _Money = 5.0
    max_tokens_per_run: _Count = 2_000_000
    max_cost_usd_per_tree: _Money = 25.0
    max_tokens_per_tree: _Count = 20_000_000
    max_cost_usd_per_repo_per_day: _Money = 50.0
    # Failed runs in a row on one issue before the breaker opens and the issue goes to a human.
    max_consecutive_failures: _Count = 3


class ManagementPolicy(_Section):
    """When a parent is resumed.

    Every ``resume_interval_s`` while its tree is active, early when a child finishes, never twice within
    ``min_interval_s``.
    """

    resume_interval_s: Annotated[float, Field(gt=0)] = 1800.0
    min_interval_s: Annotated[float, Field(ge=0)] = 120.0


class Policy(_Section):
    """Everything the decisions depend on besides the facts and the clock."""

    bot_login: str = "agent-grid[bot]"
    agent_kind: str = "claude_code"
    kill_label: str = "agent-grid:stop"
    needs_human_label: str = "needs-human"
    opt_in: OptInPolicy = OptInPolicy()
    trust: TrustPolicy = TrustPolicy()
    caps: Caps = Caps()
    management: ManagementPolicy = ManagementPolicy()

"""Nudges: "please look at issue X, because Y".

Produced by issue_tracker, agents, humans and the coordinator itself; consumed by the coordinator.
Backward-compatible changes only.

A nudge is a request, never a guarantee: the coordinator may drop, merge or delay it.
"""

from typing import Annotated, ClassVar

from pydantic import Field

from agent_grid_contracts.base import BodyModel, TolerantEnum
from agent_grid_contracts.public_issues import Actor, IssueRef

__all__ = ["Nudge", "NudgeReason", "NudgeSource"]


class NudgeSource(TolerantEnum):
    """Which channel the nudge came through."""

    GITHUB_WEBHOOK = "github_webhook"
    GITHUB_POLL = "github_poll"
    AGENT = "agent"
    HUMAN = "human"
    COORDINATOR = "coordinator"
    EXTERNAL = "external"
    UNKNOWN = "unknown"


class NudgeReason(TolerantEnum):
    """Why the issue deserves a look. Readers map reasons they do not know to ``UNKNOWN``."""

    ISSUE_OPENED = "issue_opened"
    ISSUE_REOPENED = "issue_reopened"
    ISSUE_EDITED = "issue_edited"
    ISSUE_LABELED = "issue_labeled"
    ISSUE_UNLABELED = "issue_unlabeled"
    ISSUE_ASSIGNED = "issue_assigned"
    ISSUE_UNASSIGNED = "issue_unassigned"
    ISSUE_CLOSED = "issue_closed"
    COMMENT_MENTION = "comment_mention"
    SUB_ISSUE_ADDED = "sub_issue_added"
    SUB_ISSUE_REMOVED = "sub_issue_removed"
    CHILD_CLOSED = "child_closed"
    UNBLOCKED = "unblocked"
    PULL_REQUEST_OPENED = "pull_request_opened"
    PULL_REQUEST_CLOSED = "pull_request_closed"
    PULL_REQUEST_MERGED = "pull_request_merged"
    POLLED_UPDATE = "polled_update"
    RUN_FINISHED = "run_finished"
    NEXT_SIBLING = "next_sibling"
    MANAGEMENT_DUE = "management_due"
    AGENT_REQUEST = "agent_request"
    MANUAL = "manual"
    UNKNOWN = "unknown"


class Nudge(BodyModel):
    """Ask the coordinator to (re)consider one issue."""

    KIND: ClassVar[str] = "nudge"

    issue: IssueRef
    reason: NudgeReason = NudgeReason.MANUAL
    source: NudgeSource = NudgeSource.EXTERNAL
    actor: Actor | None = Field(default=None, description="Who caused it; absent for system-made nudges.")
    event: Annotated[str | None, Field(max_length=100, description="Source event, e.g. 'issues.labeled'.")] = None
    detail: Annotated[str | None, Field(max_length=2000, description="Free text: why, in the sender's words.")] = None
    # Which label an `issues.labeled`/`unlabeled` event added or removed: a hand-back from escalation is the removal
    # of that one label, not of any. Absent from other nudges and from producers that predate it.
    label: Annotated[
        str | None, Field(max_length=100, description="The label added or removed (issue_labeled/issue_unlabeled).")
    ] = None

"""The tracker writes the coordinator wishes for, as outbox entries, and how the writer carries them out.

A wish states the wanted result, not a step (the status comment reads so, the bot is or is not assigned,
the label is or is not there, the roll-up is refreshed), so the newest wish of a row is all that needs
writing, and writing it twice changes nothing.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from agent_grid_contracts.public_issues import IssueRef
from agent_grid_tracker.public_tracker import Tracker
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from coordinator.handling import status
from coordinator.ledger.public_outbox import OutboxEntry


class _Wish(BaseModel):
    model_config = ConfigDict(frozen=True)


class StatusWish(_Wish):
    """The issue's sticky status comment reads ``body``."""

    kind: Literal["status"] = "status"
    body: str


class AssigneeWish(_Wish):
    """``login`` is (or is not) assigned to the issue."""

    kind: Literal["assignee"] = "assignee"
    login: str
    assigned: bool


class LabelWish(_Wish):
    """The issue carries (or does not carry) the label ``name``."""

    kind: Literal["label"] = "label"
    name: str
    present: bool


class RollUpWish(_Wish):
    """The root's roll-up block is rendered afresh (from the ledger and the tree as they are when it is written)."""

    kind: Literal["roll_up"] = "roll_up"


type Wish = StatusWish | AssigneeWish | LabelWish | RollUpWish
_WISH: TypeAdapter[Wish] = TypeAdapter(Annotated[Wish, Field(discriminator="kind")])

# Renders the roll-up block of a tree's root, or None when the ledger knows no run in the tree.
type RollUpRenderer = Callable[[IssueRef], Awaitable[str | None]]


def entry(ref: IssueRef, wish: Wish) -> OutboxEntry:
    """The outbox row for ``wish``: one per issue and what it is about, so a newer wish replaces an older one."""
    match wish:
        case StatusWish():
            key = status.STATUS_KEY
        case AssigneeWish():
            key = f"assignee:{wish.login}"
        case LabelWish():
            key = f"label:{wish.name}"
        case RollUpWish():
            key = status.ROLL_UP_KEY
    return OutboxEntry(issue_key=ref.key, key=key, payload=wish.model_dump_json())


def ref_of_key(key: str) -> IssueRef:
    """The issue a ledger key (``IssueRef.key``: ``tracker:owner/repo#number``) names."""
    tracker, _, rest = key.partition(":")
    repo, _, number = rest.rpartition("#")
    return IssueRef(tracker=tracker, repo=repo, number=int(number))


def parse(payload: str) -> Wish:
    """A wish back from its outbox payload."""
    return _WISH.validate_json(payload)


async def carry_out(tracker: Tracker, ref: IssueRef, wish: Wish, roll_up: RollUpRenderer) -> None:
    """Make the tracker show ``wish`` (idempotent: the tracker's upserts and set-like changes)."""
    match wish:
        case StatusWish():
            await tracker.upsert_sticky_comment(ref, status.STATUS_KEY, wish.body)
        case AssigneeWish(assigned=True):
            await tracker.add_assignees(ref, (wish.login,))
        case AssigneeWish():
            await tracker.remove_assignees(ref, (wish.login,))
        case LabelWish(present=True):
            await tracker.add_labels(ref, (wish.name,))
        case LabelWish():
            await tracker.remove_labels(ref, (wish.name,))
        case RollUpWish():
            block = await roll_up(ref)
            if block is not None:
                await tracker.replace_body_block(ref, status.ROLL_UP_KEY, block)

"""Value types that name issues and actors; shared by every message. Backward-compatible changes only."""

import re
from typing import Annotated

from pydantic import Field, field_validator

from agent_grid_contracts.base import FrozenModel, TolerantEnum

__all__ = ["Actor", "ActorKind", "AuthorAssociation", "IssueRef", "parse_issue_ref"]

_REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_ISSUE_REF_PATTERN = re.compile(r"^(?P<repo>[^#\s]+)#(?P<number>\d+)$")


class IssueRef(FrozenModel):
    """Names one issue in one tracker.

    ``node_id`` is the tracker's global id (GitHub's GraphQL node id) when the producer knows it;
    GitHub's sub-issue endpoints need it, so carrying it saves a lookup.
    """

    tracker: Annotated[str, Field(min_length=1, max_length=40)] = "github"
    repo: Annotated[str, Field(description="owner/name")]
    number: Annotated[int, Field(ge=1)]
    node_id: str | None = None

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str) -> str:
        if not _REPO_PATTERN.match(value):
            raise ValueError(f"repo must look like 'owner/name', got {value!r}")
        return value

    @property
    def key(self) -> str:
        """A stable string key, ``tracker:owner/name#number``, for ledgers, logs and dedupe."""
        return f"{self.tracker}:{self.repo}#{self.number}"

    def __str__(self) -> str:
        return f"{self.repo}#{self.number}"


def parse_issue_ref(text: str, *, tracker: str = "github") -> IssueRef:
    """Parse ``owner/name#123`` into an :class:`IssueRef`.

    Raises:
        ValueError: the text is not of that form.
    """
    match = _ISSUE_REF_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"expected OWNER/REPO#NUMBER, got {text!r}")
    return IssueRef(tracker=tracker, repo=match["repo"], number=int(match["number"]))


class AuthorAssociation(TolerantEnum):
    """GitHub's ``author_association``: how the actor relates to the repository."""

    OWNER = "OWNER"
    MEMBER = "MEMBER"
    COLLABORATOR = "COLLABORATOR"
    CONTRIBUTOR = "CONTRIBUTOR"
    FIRST_TIME_CONTRIBUTOR = "FIRST_TIME_CONTRIBUTOR"
    FIRST_TIMER = "FIRST_TIMER"
    MANNEQUIN = "MANNEQUIN"
    NONE = "NONE"
    UNKNOWN = "unknown"


class ActorKind(TolerantEnum):
    """Who caused a nudge: a person, a bot account, one of our agent runs, or the system itself."""

    HUMAN = "human"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class Actor(FrozenModel):
    """The account behind an event, with what the tracker says of its relation to the repository.

    The coordinator decides trust from ``association`` (and its allow-list); a producer cannot
    declare itself trusted. Agent runs identify themselves with ``run_id``.
    """

    login: Annotated[str, Field(min_length=1, max_length=100)]
    kind: ActorKind = ActorKind.HUMAN
    association: AuthorAssociation = AuthorAssociation.UNKNOWN
    run_id: str | None = None

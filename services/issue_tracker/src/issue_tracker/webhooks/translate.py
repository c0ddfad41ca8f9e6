"""GitHub webhook events → nudges: a pure function of (event name, payload, config).

Who may start work is the coordinator's decision; translation only records who acted and how the tracker
relates them to the repository. ``author_association`` describes an issue's or comment's *author*, so it is
reported only when that author is the sender; otherwise the association is ``unknown`` (labeling and
assigning require triage access on the repository, which the coordinator knows from the event name).
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_grid_contracts.public_issues import Actor, ActorKind, AuthorAssociation, IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from pydantic import ValidationError

from issue_tracker.webhooks.payloads import (
    Envelope,
    Issue,
    IssueCommentEvent,
    IssueDependenciesEvent,
    IssuesEvent,
    PullRequestEvent,
    Repository,
    SubIssuesEvent,
    User,
)

_ISSUE_URL = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<number>\d+)/?$")
# GitHub's closing keywords (and "refs"), followed by #N, owner/repo#N or an issue URL.
_REFERENCE = re.compile(
    r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?|refs?|references)\b:?\s+"
    r"(?:(?P<repo>[\w.-]+/[\w.-]+)?#(?P<number>\d+)|https://github\.com/(?P<url_repo>[\w.-]+/[\w.-]+)/issues/(?P<url_number>\d+))",
    re.IGNORECASE,
)

_ISSUE_ACTIONS = {
    "opened": NudgeReason.ISSUE_OPENED,
    "reopened": NudgeReason.ISSUE_REOPENED,
    "edited": NudgeReason.ISSUE_EDITED,
    "labeled": NudgeReason.ISSUE_LABELED,
    "unlabeled": NudgeReason.ISSUE_UNLABELED,
    "assigned": NudgeReason.ISSUE_ASSIGNED,
    "unassigned": NudgeReason.ISSUE_UNASSIGNED,
}
_LOGGED_EVENTS = frozenset({"installation", "installation_repositories", "installation_target", "ping"})


@dataclass(frozen=True)
class TranslationConfig:
    """``bot_logins``: our own accounts, whose actions never nudge. ``mention``: the handle a comment must name."""

    bot_logins: frozenset[str]
    mention: str

    def is_bot(self, user: User | None) -> bool:
        return user is not None and user.login.lower() in {login.lower() for login in self.bot_logins}


@dataclass(frozen=True)
class Translation:
    """The nudges an event produces; when none, ``ignored`` says why (for the log and the 202 body)."""

    nudges: tuple[Nudge, ...] = ()
    ignored: str | None = None
    log_only: bool = field(default=False)


class PayloadError(ValueError):
    """A relevant event whose payload lacks what it must carry (answered with 400)."""


def translate(event: str, payload: Mapping[str, Any], config: TranslationConfig) -> Translation:
    """Map one webhook delivery to nudges.

    Raises:
        PayloadError: the event is relevant but its payload is not of the expected shape.
    """
    if event in _LOGGED_EVENTS:
        return Translation(ignored=f"{event} event (logged, no nudge)", log_only=True)
    handler = _HANDLERS.get(event)
    if handler is None:
        return Translation(ignored=f"{event} events are not relevant")
    try:
        sender = Envelope.model_validate(payload).sender
        if config.is_bot(sender):
            return Translation(ignored="sent by the bot itself")
        return handler(payload, config)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        location = ".".join(str(part) for part in first["loc"])
        raise PayloadError(f"{event} payload: {location}: {first['msg']}") from None


def _issues(payload: Mapping[str, Any], _config: TranslationConfig) -> Translation:
    event = IssuesEvent.model_validate(payload)
    action = event.action or ""
    if action == "closed":
        return _closed(event)
    reason = _ISSUE_ACTIONS.get(action)
    if reason is None:
        return Translation(ignored=f"issues.{action} is not relevant")
    if event.issue.pull_request is not None:
        return Translation(ignored="a pull request, not an issue")
    actor = _actor(event.sender, event.issue.user, event.issue.author_association)
    # Which label: removing the escalation label hands an issue back, removing another one does not.
    label = event.label.name if event.label is not None and action in {"labeled", "unlabeled"} else None
    return _nudges(
        _issue_ref(event.issue, event.repository), reason=reason, actor=actor, event=f"issues.{action}", label=label
    )


def _closed(event: IssuesEvent) -> Translation:
    actor = _actor(event.sender, event.issue.user, event.issue.author_association)
    parent = _parent_of(event.issue)
    if parent is not None:
        return _nudges(
            parent,
            reason=NudgeReason.CHILD_CLOSED,
            actor=actor,
            event="issues.closed",
            detail=f"child {event.issue.number} closed",
        )
    # The payload does not name the parent: nudge the closed issue; the coordinator reads its tree.
    return _nudges(
        _issue_ref(event.issue, event.repository), reason=NudgeReason.ISSUE_CLOSED, actor=actor, event="issues.closed"
    )


def _issue_comment(payload: Mapping[str, Any], config: TranslationConfig) -> Translation:
    event = IssueCommentEvent.model_validate(payload)
    if event.action not in {"created", "edited"}:
        return Translation(ignored=f"issue_comment.{event.action} is not relevant")
    if config.is_bot(event.comment.user):
        return Translation(ignored="a comment by the bot itself")
    if event.issue.pull_request is not None:
        return Translation(ignored="a comment on a pull request")
    if not _mentions(event.comment.body or "", config.mention):
        return Translation(ignored=f"the comment does not mention {config.mention}")
    actor = _actor(event.sender, event.comment.user, event.comment.author_association)
    return _nudges(
        _issue_ref(event.issue, event.repository),
        reason=NudgeReason.COMMENT_MENTION,
        actor=actor,
        event=f"issue_comment.{event.action}",
    )


def _sub_issues(payload: Mapping[str, Any], _config: TranslationConfig) -> Translation:
    event = SubIssuesEvent.model_validate(payload)
    reasons = {
        "sub_issue_added": NudgeReason.SUB_ISSUE_ADDED,
        "parent_issue_added": NudgeReason.SUB_ISSUE_ADDED,
        "sub_issue_removed": NudgeReason.SUB_ISSUE_REMOVED,
        "parent_issue_removed": NudgeReason.SUB_ISSUE_REMOVED,
    }
    reason = reasons.get(event.action or "")
    if reason is None:
        return Translation(ignored=f"sub_issues.{event.action} is not relevant")
    parent_repo = event.parent_issue_repo or event.repository
    return _nudges(
        _issue_ref(event.parent_issue, parent_repo),
        reason=reason,
        actor=_actor(event.sender),
        event=f"sub_issues.{event.action}",
        detail=f"sub-issue {event.sub_issue.number}",
    )


def _issue_dependencies(payload: Mapping[str, Any], _config: TranslationConfig) -> Translation:
    event = IssueDependenciesEvent.model_validate(payload)
    if event.action not in {"blocked_by_removed", "blocking_removed"}:
        return Translation(ignored=f"issue_dependencies.{event.action} is not relevant")
    blocked_repo = event.blocked_issue_repo or event.repository
    return _nudges(
        _issue_ref(event.blocked_issue, blocked_repo),
        reason=NudgeReason.UNBLOCKED,
        actor=_actor(event.sender),
        event=f"issue_dependencies.{event.action}",
        detail=f"no longer blocked by {event.blocking_issue.number}",
    )


def _pull_request(payload: Mapping[str, Any], _config: TranslationConfig) -> Translation:
    event = PullRequestEvent.model_validate(payload)
    pull = event.pull_request
    if event.action == "opened":
        reason = NudgeReason.PULL_REQUEST_OPENED
    elif event.action == "closed":
        reason = NudgeReason.PULL_REQUEST_MERGED if pull.merged else NudgeReason.PULL_REQUEST_CLOSED
    else:
        return Translation(ignored=f"pull_request.{event.action} is not relevant")
    if event.repository is None:
        raise PayloadError("pull_request payload: repository: Field required")
    referenced = _referenced_issues(f"{pull.title or ''}\n{pull.body or ''}", event.repository.full_name)
    if not referenced:
        return Translation(ignored="the pull request references no issue")
    actor = _actor(event.sender, pull.user, pull.author_association)
    nudges = tuple(
        Nudge(
            issue=ref,
            reason=reason,
            source=NudgeSource.GITHUB_WEBHOOK,
            actor=actor,
            event=f"pull_request.{event.action}",
            detail=f"pull request #{pull.number}",
        )
        for ref in referenced
    )
    return Translation(nudges=nudges)


_HANDLERS: dict[str, Callable[[Mapping[str, Any], TranslationConfig], Translation]] = {
    "issues": _issues,
    "issue_comment": _issue_comment,
    "sub_issues": _sub_issues,
    "issue_dependencies": _issue_dependencies,
    "pull_request": _pull_request,
}


def _nudges(
    issue: IssueRef,
    *,
    reason: NudgeReason,
    actor: Actor | None,
    event: str,
    detail: str | None = None,
    label: str | None = None,
) -> Translation:
    nudge = Nudge(
        issue=issue,
        reason=reason,
        source=NudgeSource.GITHUB_WEBHOOK,
        actor=actor,
        event=event,
        detail=detail,
        label=label,
    )
    return Translation(nudges=(nudge,))


def _issue_ref(issue: Issue, repository: Repository | None) -> IssueRef:
    repo = issue.repo(repository)
    if repo is None:
        raise PayloadError("payload names no repository for the issue")
    return IssueRef(repo=repo, number=issue.number, node_id=issue.node_id)


def _parent_of(issue: Issue) -> IssueRef | None:
    match = _ISSUE_URL.search(issue.parent_issue_url or "")
    return IssueRef(repo=match["repo"], number=int(match["number"])) if match else None


def _actor(sender: User | None, author: User | None = None, author_association: str | None = None) -> Actor | None:
    if sender is None:
        return None
    kind = ActorKind.BOT if sender.type == "Bot" else ActorKind.HUMAN
    same_person = author is not None and author.login == sender.login
    association = AuthorAssociation(author_association) if same_person and author_association else None
    return Actor(login=sender.login, kind=kind, association=association or AuthorAssociation.UNKNOWN)


def _mentions(text: str, handle: str) -> bool:
    return re.search(rf"(?<![\w@/.-]){re.escape(handle)}(?![\w-])", text, re.IGNORECASE) is not None


def _referenced_issues(text: str, own_repo: str) -> list[IssueRef]:
    found: dict[str, IssueRef] = {}
    for match in _REFERENCE.finditer(text):
        repo = match["repo"] or match["url_repo"] or own_repo
        number = int(match["number"] or match["url_number"])
        try:
            ref = IssueRef(repo=repo, number=number)
        except ValidationError:
            continue
        found.setdefault(ref.key, ref)
    return list(found.values())

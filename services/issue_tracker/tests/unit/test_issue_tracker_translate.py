import copy
from typing import Any

import pytest
from agent_grid_contracts.public_issues import ActorKind, AuthorAssociation
from agent_grid_contracts.public_nudges import NudgeReason, NudgeSource
from issue_tracker.webhooks.public_api import TranslationConfig, translate
from issue_tracker.webhooks.translate import PayloadError

CONFIG = TranslationConfig(bot_logins=frozenset({"agent-grid[bot]"}), mention="@agent-grid")
REPO = {"full_name": "octo/widgets"}


def user(login: str = "alice", kind: str = "User") -> dict[str, Any]:
    return {"login": login, "type": kind}


def issue(number: int = 7, author: str = "alice", association: str = "MEMBER", **extra: Any) -> dict[str, Any]:
    return {
        "number": number,
        "node_id": f"I_{number}",
        "user": user(author),
        "author_association": association,
        "repository_url": "https://api.github.com/repos/octo/widgets",
        **extra,
    }


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("opened", NudgeReason.ISSUE_OPENED),
        ("reopened", NudgeReason.ISSUE_REOPENED),
        ("edited", NudgeReason.ISSUE_EDITED),
        ("labeled", NudgeReason.ISSUE_LABELED),
        ("assigned", NudgeReason.ISSUE_ASSIGNED),
        ("unassigned", NudgeReason.ISSUE_UNASSIGNED),
    ],
)
def test_issue_actions_nudge_the_issue(action: str, reason: NudgeReason) -> None:
    [nudge] = translate(
        "issues", {"action": action, "issue": issue(), "repository": REPO, "sender": user()}, CONFIG
    ).nudges

    assert (nudge.issue.repo, nudge.issue.number, nudge.issue.node_id) == ("octo/widgets", 7, "I_7")
    assert nudge.reason is reason
    assert nudge.source is NudgeSource.GITHUB_WEBHOOK
    assert nudge.event == f"issues.{action}"
    assert nudge.actor is not None
    assert (nudge.actor.login, nudge.actor.association) == ("alice", AuthorAssociation.MEMBER)


@pytest.mark.parametrize("action", ["labeled", "unlabeled"])
def test_a_label_change_names_the_label(action: str) -> None:
    payload = {
        "action": action,
        "issue": issue(),
        "label": {"name": "needs-human", "color": "d73a4a"},
        "repository": REPO,
        "sender": user(),
    }

    [nudge] = translate("issues", payload, CONFIG).nudges

    assert (nudge.event, nudge.label) == (f"issues.{action}", "needs-human")
    # Other issue events name none, and a label event that leaves it out (never seen from GitHub) still nudges.
    assert translate("issues", {**payload, "action": "edited"}, CONFIG).nudges[0].label is None
    assert translate("issues", {**payload, "label": None}, CONFIG).nudges[0].label is None


def test_the_author_association_is_reported_only_when_the_author_acted() -> None:
    payload = {
        "action": "labeled",
        "issue": issue(author="stranger", association="NONE"),
        "repository": REPO,
        "sender": user("maintainer"),
    }

    [nudge] = translate("issues", payload, CONFIG).nudges

    assert nudge.actor is not None
    assert nudge.actor.login == "maintainer"
    assert nudge.actor.association is AuthorAssociation.UNKNOWN  # NONE describes the author, not the labeler


def test_a_closed_issue_nudges_its_parent_when_the_payload_names_it() -> None:
    child = issue(number=9, parent_issue_url="https://api.github.com/repos/octo/platform/issues/3")

    [nudge] = translate(
        "issues", {"action": "closed", "issue": child, "repository": REPO, "sender": user()}, CONFIG
    ).nudges

    assert (nudge.issue.repo, nudge.issue.number, nudge.reason) == ("octo/platform", 3, NudgeReason.CHILD_CLOSED)


def test_a_closed_issue_without_a_known_parent_nudges_itself_for_the_coordinator_to_resolve() -> None:
    [nudge] = translate(
        "issues", {"action": "closed", "issue": issue(), "repository": REPO, "sender": user()}, CONFIG
    ).nudges

    assert (nudge.issue.number, nudge.reason) == (7, NudgeReason.ISSUE_CLOSED)


@pytest.mark.parametrize("body", ["@agent-grid please split this", "cc @Agent-Grid", "(@agent-grid)"])
def test_a_comment_mentioning_the_bot_nudges_the_issue(body: str) -> None:
    payload = {
        "action": "created",
        "issue": issue(author="bob"),
        "repository": REPO,
        "sender": user("alice"),
        "comment": {"body": body, "user": user("alice"), "author_association": "COLLABORATOR"},
    }

    [nudge] = translate("issue_comment", payload, CONFIG).nudges

    assert nudge.reason is NudgeReason.COMMENT_MENTION
    assert nudge.actor is not None
    assert nudge.actor.association is AuthorAssociation.COLLABORATOR


@pytest.mark.parametrize("body", ["no mention", "mail agent@agent-grid.dev", "@agent-gridder", "x/@agent-grid"])
def test_a_comment_without_a_real_mention_is_ignored(body: str) -> None:
    payload = {
        "action": "created",
        "issue": issue(),
        "repository": REPO,
        "sender": user(),
        "comment": {"body": body, "user": user()},
    }

    translation = translate("issue_comment", payload, CONFIG)

    assert translation.nudges == ()
    assert translation.ignored == "the comment does not mention @agent-grid"


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        (
            "issue_comment",
            {
                "action": "created",
                "issue": issue(),
                "repository": REPO,
                "sender": user("agent-grid[bot]", "Bot"),
                "comment": {"body": "@agent-grid status", "user": user("agent-grid[bot]", "Bot")},
            },
        ),
        (
            "issues",
            {"action": "edited", "issue": issue(), "repository": REPO, "sender": user("Agent-Grid[bot]", "Bot")},
        ),
        (
            "issues",
            {"action": "labeled", "issue": issue(), "repository": REPO, "sender": user("agent-grid[bot]", "Bot")},
        ),
    ],
)
def test_the_bot_never_nudges_itself(event: str, payload: dict[str, Any]) -> None:
    translation = translate(event, payload, CONFIG)

    assert translation.nudges == ()
    assert translation.ignored is not None


def test_other_bots_are_recorded_as_bots() -> None:
    payload = {
        "action": "opened",
        "issue": issue(author="dependabot[bot]"),
        "repository": REPO,
        "sender": user("dependabot[bot]", "Bot"),
    }

    [nudge] = translate("issues", payload, CONFIG).nudges

    assert nudge.actor is not None
    assert nudge.actor.kind is ActorKind.BOT


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("sub_issue_added", NudgeReason.SUB_ISSUE_ADDED),
        ("sub_issue_removed", NudgeReason.SUB_ISSUE_REMOVED),
        ("parent_issue_added", NudgeReason.SUB_ISSUE_ADDED),
        ("parent_issue_removed", NudgeReason.SUB_ISSUE_REMOVED),
    ],
)
def test_sub_issue_changes_nudge_the_parent(action: str, reason: NudgeReason) -> None:
    payload = {
        "action": action,
        "parent_issue": issue(number=1),
        "sub_issue": issue(number=2),
        "repository": REPO,
        "sender": user(),
    }

    [nudge] = translate("sub_issues", payload, CONFIG).nudges

    assert (nudge.issue.number, nudge.reason, nudge.detail) == (1, reason, "sub-issue 2")


@pytest.mark.parametrize("action", ["blocked_by_removed", "blocking_removed"])
def test_a_removed_blocker_nudges_the_unblocked_issue(action: str) -> None:
    payload = {
        "action": action,
        "blocked_issue": issue(number=5),
        "blocking_issue": issue(number=4),
        "repository": REPO,
        "sender": user(),
    }

    [nudge] = translate("issue_dependencies", payload, CONFIG).nudges

    assert (nudge.issue.number, nudge.reason) == (5, NudgeReason.UNBLOCKED)


@pytest.mark.parametrize("action", ["blocked_by_added", "blocking_added"])
def test_an_added_blocker_is_ignored(action: str) -> None:
    payload = {
        "action": action,
        "blocked_issue": issue(number=5),
        "blocking_issue": issue(number=4),
        "repository": REPO,
        "sender": user(),
    }

    assert translate("issue_dependencies", payload, CONFIG).nudges == ()


@pytest.mark.parametrize(
    ("action", "merged", "reason"),
    [
        ("opened", False, NudgeReason.PULL_REQUEST_OPENED),
        ("closed", True, NudgeReason.PULL_REQUEST_MERGED),
        ("closed", False, NudgeReason.PULL_REQUEST_CLOSED),
    ],
)
def test_a_pull_request_nudges_every_issue_it_references(action: str, merged: bool, reason: NudgeReason) -> None:
    pull = {
        "number": 30,
        "title": "Fix the widget (fixes #7)",
        "merged": merged,
        "user": user(),
        "body": "Closes octo/platform#3, resolves https://github.com/octo/widgets/issues/8.\nFixes #7 again.",
    }

    nudges = translate(
        "pull_request", {"action": action, "pull_request": pull, "repository": REPO, "sender": user()}, CONFIG
    ).nudges

    assert [(n.issue.repo, n.issue.number) for n in nudges] == [
        ("octo/widgets", 7),
        ("octo/platform", 3),
        ("octo/widgets", 8),
    ]
    assert {n.reason for n in nudges} == {reason}
    assert {n.detail for n in nudges} == {"pull request #30"}


def test_a_pull_request_without_references_is_ignored() -> None:
    pull = {"number": 30, "title": "Tidy", "body": "see #7 for context", "user": user()}

    translation = translate(
        "pull_request", {"action": "opened", "pull_request": pull, "repository": REPO, "sender": user()}, CONFIG
    )

    assert translation.nudges == ()


@pytest.mark.parametrize("event", ["installation", "installation_repositories", "ping"])
def test_installation_events_are_logged_not_nudged(event: str) -> None:
    translation = translate(event, {"action": "created", "sender": user()}, CONFIG)

    assert translation.nudges == ()
    assert translation.log_only


def test_irrelevant_events_are_ignored_whatever_their_payload() -> None:
    assert translate("star", {"nonsense": True}, CONFIG).ignored == "star events are not relevant"


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "opened"},
        {"action": "opened", "issue": {"number": "seven"}, "repository": REPO},
        {"action": "opened", "issue": {"number": 7}},
        {"action": "opened", "issue": issue(), "repository": {"full_name": "no"}, "sender": user()},
    ],
)
def test_a_relevant_event_with_a_malformed_payload_is_a_payload_error(payload: dict[str, Any]) -> None:
    broken = copy.deepcopy(payload)
    if "issue" in broken and "repository_url" in broken["issue"]:
        broken["issue"]["repository_url"] = "https://api.github.com/repos/not a repo"
    with pytest.raises(PayloadError):
        translate("issues", broken, CONFIG)

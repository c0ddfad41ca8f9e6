"""The in-memory GitHub: accounts, repositories, issues, labels, assignees, comments. Pure and synchronous.

Every operation either succeeds or raises :class:`ApiError` before changing anything, and every mutation
appends :class:`Change` records to ``pending`` for webhook delivery. Names are matched case-insensitively,
as GitHub does.
"""

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Literal

from agent_grid_github_test_server.entities import (
    AUTHOR_ASSOCIATIONS,
    AccountType,
    App,
    Comment,
    Installation,
    Issue,
    IssueEvent,
    IssueState,
    Label,
    Repo,
    StateReason,
    Token,
    User,
)
from agent_grid_github_test_server.errors import (
    ApiError,
    invalid_field,
    missing_field,
    not_found,
    validation_failed,
)
from agent_grid_github_test_server.graph import IssueGraph

MAX_ASSIGNEES = 10
_ROLES = ("admin", "maintain", "write", "triage", "read")
DEFAULT_LABEL_COLOR = "ededed"
_LABELS_DOCS = "https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue"


class Store(IssueGraph):
    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self._ids = itertools.count(1001)  # one id space: an id never equals an issue number by accident
        self.users: dict[str, User] = {}  # by lower-cased login
        self.repos: dict[tuple[str, str], Repo] = {}  # by lower-cased (owner, name)
        self.comments: dict[int, Comment] = {}
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Token] = {}

    def next_id(self) -> int:
        return next(self._ids)

    # accounts

    def add_user(self, login: str, *, type: AccountType = "User", name: str | None = None) -> User:
        if login.lower() in self.users:
            raise validation_failed({"resource": "User", "code": "already_exists", "field": "login"})
        user = User(id=self.next_id(), login=login, type=type, name=name, created_at=self.now())
        self.users[login.lower()] = user
        return user

    def user(self, login: str) -> User:
        found = self.users.get(login.lower())
        if found is None:
            raise not_found()
        return found

    def add_member(self, org: User, user: User) -> None:
        if org.type != "Organization":
            raise invalid_field("Organization", "login", org.login)
        org.members.add(user.id)

    # repositories

    def add_repo(self, owner: User, name: str, *, private: bool = False, description: str | None = None) -> Repo:
        key = (owner.login.lower(), name.lower())
        if key in self.repos:
            raise validation_failed({"resource": "Repository", "code": "custom", "field": "name"})
        now = self.now()
        repo = Repo(
            id=self.next_id(),
            owner=owner,
            name=name,
            private=private,
            description=description,
            created_at=now,
            updated_at=now,
        )
        self.repos[key] = repo
        return repo

    def repo(self, owner: str, name: str, token: Token | None = None) -> Repo:
        found = self.repos.get((owner.lower(), name.lower()))
        if found is None or (token is not None and not token.can_see(found)):
            raise not_found("https://docs.github.com/rest/repos/repos#get-a-repository")
        return found

    @property
    def repos_by_id(self) -> dict[int, Repo]:
        return {repo.id: repo for repo in self.repos.values()}

    def add_collaborator(self, repo: Repo, user: User, *, role: str = "write") -> None:
        if role not in _ROLES:
            raise invalid_field("Collaborator", "permission", role)
        repo.collaborators.add(user.id)
        if role != "write":
            repo.roles[user.id] = role

    def role(self, repo: Repo, user: User) -> str:
        """The user's role on the repository (``none`` without access): owner, organization, collaborator, app."""
        if user is repo.owner:
            return "admin"
        if user.id in repo.collaborators:
            return repo.roles.get(user.id, "write")
        # Organization members get the organization's base role; this server's organizations grant write, as
        # its repository answers say (``permissions.push`` for members).
        if repo.owner.type == "Organization" and user.id in repo.owner.members:
            return "write"
        app = self.app_of(user)
        installation = self.installation_for(repo) if app is not None else None
        if installation is not None and installation.app is app:
            return "write" if installation.permissions.get("issues") == "write" else "read"
        return "none" if repo.private else "read"

    def association(self, repo: Repo, user: User) -> str:
        if user is repo.owner:
            return "OWNER"
        if repo.owner.type == "Organization" and user.id in repo.owner.members:
            return "MEMBER"
        if user.id in repo.collaborators:
            return "COLLABORATOR"
        return "NONE"

    def ensure_label(self, repo: Repo, name: str) -> Label:
        label = repo.labels.get(name.lower())
        if label is None:
            label = Label(id=self.next_id(), name=name, color=DEFAULT_LABEL_COLOR)
            repo.labels[name.lower()] = label
        return label

    # apps and tokens

    def add_app(
        self,
        slug: str,
        *,
        owner: User,
        public_key_pem: str,
        name: str | None = None,
        permissions: dict[str, str] | None = None,
        events: Sequence[str] = ("issues", "issue_comment", "sub_issues", "issue_dependencies"),
    ) -> App:
        bot = self.add_user(f"{slug}[bot]", type="Bot")
        app = App(
            id=self.next_id(),
            slug=slug,
            name=name or slug,
            owner=owner,
            bot=bot,
            public_key_pem=public_key_pem,
            permissions=dict(permissions or {"issues": "write", "metadata": "read"}),
            events=list(events),
            created_at=self.now(),
            client_id=f"Iv1.{slug[:8]}{bot.id:08x}",
        )
        bot.app_id = app.id
        self.apps[app.id] = app
        return app

    def add_installation(
        self,
        app: App,
        account: User,
        *,
        repositories: Iterable[Repo] | None = None,
        permissions: dict[str, str] | None = None,
    ) -> Installation:
        selected = None if repositories is None else {repo.id for repo in repositories}
        installation = Installation(
            id=self.next_id(),
            app=app,
            account=account,
            repository_selection="all" if selected is None else "selected",
            repository_ids=selected or set(),
            permissions=dict(permissions or app.permissions),
            created_at=self.now(),
        )
        self.installations[installation.id] = installation
        return installation

    def app_of(self, user: User) -> App | None:
        """The GitHub App a bot account acts for."""
        return None if user.app_id is None else self.apps.get(user.app_id)

    def installation_for(self, repo: Repo) -> Installation | None:
        return next((i for i in self.installations.values() if i.covers(repo)), None)

    def add_token(
        self,
        user: User,
        value: str,
        *,
        expires_at: datetime | None = None,
        installation: Installation | None = None,
        permissions: dict[str, str] | None = None,
        repository_ids: set[int] | None = None,
    ) -> Token:
        token = Token(value, user, expires_at, installation, permissions, repository_ids)
        self.tokens[value] = token
        return token

    def resolve_token(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None or (token.expires_at is not None and token.expires_at <= self.now()):
            return None
        return token

    # issues

    def issue(self, repo: Repo, number: int) -> Issue:
        found = repo.issues.get(number)
        if found is None:
            raise not_found("https://docs.github.com/rest/issues/issues#get-an-issue")
        return found

    def association_of(self, issue: Issue) -> str:
        return issue.author_association or self.association(issue.repo, issue.user)

    def create_issue(
        self,
        repo: Repo,
        actor: User,
        *,
        title: object,
        body: object = None,
        labels: object = None,
        assignees: object = None,
        author_association: str | None = None,
        created_at: datetime | None = None,
        via_app: App | None = None,
    ) -> Issue:
        if not isinstance(title, str | int) or str(title).strip() == "":
            raise missing_field("Issue", "title")
        _check_body(body)
        _check_association(author_association)
        new_labels = [self.ensure_label(repo, name) for name in _names(labels, "labels")]
        new_assignees = self._assignable(repo, _list(assignees, "assignees"))
        created = created_at or self.now()
        issue = Issue(
            id=self.next_id(),
            number=repo.next_number,
            repo=repo,
            title=str(title),
            body=body if isinstance(body, str) else None,
            user=actor,
            created_at=created,
            updated_at=created,
            labels=_unique(new_labels),
            assignees=new_assignees,
            author_association=author_association,
            via_app=via_app or self.app_of(actor),
        )
        repo.next_number += 1
        repo.issues[issue.number] = issue
        self.issues[issue.id] = issue
        for label in issue.labels:  # as on GitHub: labels given at creation show in the timeline as added by the author
            self._timeline(issue, "labeled", actor, label, created)
        self._record("issues", "opened", actor, issue)
        return issue

    def update_issue(self, issue: Issue, actor: User, fields: dict[str, object]) -> Issue:
        """PATCH semantics: only the given fields change; labels and assignees are replaced as sets."""
        state, reason = _check_update(issue, fields)
        new_labels = None
        if "labels" in fields:
            new_labels = _unique([self.ensure_label(issue.repo, n) for n in _names(fields["labels"], "labels")])
        new_assignees = None
        if "assignees" in fields:
            new_assignees = self._assignable(issue.repo, _list(fields["assignees"], "assignees"))
        elif "assignee" in fields:
            new_assignees = self._assignable(issue.repo, [] if fields["assignee"] is None else [fields["assignee"]])

        edits: dict[str, dict[str, object]] = {}
        if "title" in fields and str(fields["title"]) != issue.title:
            edits["title"] = {"from": issue.title}
            issue.title = str(fields["title"])
        if "body" in fields and fields["body"] != issue.body:
            edits["body"] = {"from": issue.body or ""}
            issue.body = fields["body"] if isinstance(fields["body"], str) else None
        changed = bool(edits)
        if edits:
            self._record("issues", "edited", actor, issue, changes=edits)
        changed |= self._set_state(issue, actor, state, reason)
        if new_labels is not None:
            changed |= self._replace_labels(issue, actor, new_labels)
        if new_assignees is not None:
            changed |= self._replace_assignees(issue, actor, new_assignees)
        if changed:
            issue.updated_at = self.now()
        return issue

    def _set_state(self, issue: Issue, actor: User, state: IssueState, reason: StateReason | None) -> bool:
        if state == issue.state:
            if reason is not None and state == IssueState.CLOSED and reason != issue.state_reason:
                issue.state_reason = reason
                return True
            return False
        issue.state = state
        if state == IssueState.CLOSED:
            issue.state_reason = reason or StateReason.COMPLETED
            issue.closed_at = self.now()
            issue.closed_by = actor
            self._record("issues", "closed", actor, issue)
        else:
            issue.state_reason = StateReason.REOPENED
            issue.closed_at = None
            issue.closed_by = None
            self._record("issues", "reopened", actor, issue)
        return True

    def list_issues(
        self,
        repo: Repo,
        *,
        state: str = "open",
        since: datetime | None = None,
        sort: str = "created",
        direction: str = "desc",
        labels: Sequence[str] = (),
        assignee: str | None = None,
        creator: str | None = None,
    ) -> list[Issue]:
        wanted = {name.lower() for name in labels}
        found = [
            issue
            for issue in repo.issues.values()
            if (state == "all" or issue.state == state)
            and (since is None or issue.updated_at >= since)
            and wanted <= {label.name.lower() for label in issue.labels}
            and _matches_assignee(issue, assignee)
            and (creator is None or issue.user.login.lower() == creator.lower())
        ]

        def key(issue: Issue) -> tuple[datetime | int, int]:
            if sort == "updated":
                return (issue.updated_at, issue.number)
            if sort == "comments":
                return (len(issue.comments), issue.number)
            return (issue.created_at, issue.number)

        return sorted(found, key=key, reverse=direction == "desc")

    # labels and assignees

    def add_labels(self, issue: Issue, actor: User, names: object) -> list[Label]:
        added = [self.ensure_label(issue.repo, name) for name in _names(names, "labels")]
        if self._replace_labels(issue, actor, _unique([*issue.labels, *added])):
            issue.updated_at = self.now()
        return issue.labels

    def set_labels(self, issue: Issue, actor: User, names: object) -> list[Label]:
        wanted = _unique([self.ensure_label(issue.repo, name) for name in _names(names, "labels")])
        if self._replace_labels(issue, actor, wanted):
            issue.updated_at = self.now()
        return issue.labels

    def remove_label(self, issue: Issue, actor: User, name: str) -> list[Label]:
        label = next((lbl for lbl in issue.labels if lbl.name.lower() == name.lower()), None)
        if label is None:
            raise ApiError(404, "Label does not exist", documentation_url=_LABELS_DOCS)
        self._replace_labels(issue, actor, [lbl for lbl in issue.labels if lbl is not label])
        issue.updated_at = self.now()
        return issue.labels

    def _replace_labels(self, issue: Issue, actor: User, labels: list[Label]) -> bool:
        before = issue.labels
        issue.labels = labels
        for label in labels:
            if label not in before:
                self._timeline(issue, "labeled", actor, label, self.now())
                self._record("issues", "labeled", actor, issue, label=label)
        for label in before:
            if label not in labels:
                self._timeline(issue, "unlabeled", actor, label, self.now())
                self._record("issues", "unlabeled", actor, issue, label=label)
        return set(map(id, before)) != set(map(id, labels))

    def _timeline(
        self, issue: Issue, event: Literal["labeled", "unlabeled"], actor: User, label: Label, at: datetime
    ) -> None:
        issue.events.append(IssueEvent(self.next_id(), event, actor, label, at, self.app_of(actor)))

    def add_assignees(self, issue: Issue, actor: User, logins: object) -> Issue:
        added = self._assignable(issue.repo, _list(logins, "assignees"))
        if self._replace_assignees(issue, actor, _unique([*issue.assignees, *added])[:MAX_ASSIGNEES]):
            issue.updated_at = self.now()
        return issue

    def remove_assignees(self, issue: Issue, actor: User, logins: object) -> Issue:
        gone = {str(login).lower() for login in _list(logins, "assignees")}
        if self._replace_assignees(issue, actor, [u for u in issue.assignees if u.login.lower() not in gone]):
            issue.updated_at = self.now()
        return issue

    def _assignable(self, repo: Repo, logins: Sequence[object]) -> list[User]:
        # GitHub silently drops logins that cannot be assigned rather than failing the request.
        del repo
        users = [self.users[str(login).lower()] for login in logins if str(login).lower() in self.users]
        return _unique([u for u in users if u.type != "Organization"])[:MAX_ASSIGNEES]

    def _replace_assignees(self, issue: Issue, actor: User, assignees: list[User]) -> bool:
        before = issue.assignees
        issue.assignees = assignees
        for user in assignees:
            if user not in before:
                self._record("issues", "assigned", actor, issue, assignee=user)
        for user in before:
            if user not in assignees:
                self._record("issues", "unassigned", actor, issue, assignee=user)
        return set(map(id, before)) != set(map(id, assignees))

    # comments

    def create_comment(
        self,
        issue: Issue,
        actor: User,
        body: object,
        *,
        author_association: str | None = None,
        created_at: datetime | None = None,
        via_app: App | None = None,
    ) -> Comment:
        if not isinstance(body, str) or body == "":
            raise missing_field("IssueComment", "body")
        _check_association(author_association)
        created = created_at or self.now()
        comment = Comment(
            id=self.next_id(),
            issue=issue,
            user=actor,
            body=body,
            created_at=created,
            updated_at=created,
            author_association=author_association,
            via_app=via_app or self.app_of(actor),
        )
        issue.comments.append(comment)
        issue.updated_at = max(issue.updated_at, created)
        self.comments[comment.id] = comment
        self._record("issue_comment", "created", actor, issue, comment=comment)
        return comment

    def comment(self, repo: Repo, comment_id: int) -> Comment:
        found = self.comments.get(comment_id)
        if found is None or found.issue.repo is not repo or found not in found.issue.comments:
            raise not_found("https://docs.github.com/rest/issues/comments#get-an-issue-comment")
        return found

    def update_comment(self, comment: Comment, actor: User, body: object) -> Comment:
        if not isinstance(body, str) or body == "":
            raise missing_field("IssueComment", "body")
        if body != comment.body:
            previous = comment.body
            comment.body = body
            comment.updated_at = self.now()
            self._record(
                "issue_comment", "edited", actor, comment.issue, comment=comment, changes={"body": {"from": previous}}
            )
        return comment

    def delete_comment(self, comment: Comment, actor: User) -> None:
        comment.issue.comments.remove(comment)
        del self.comments[comment.id]
        self._record("issue_comment", "deleted", actor, comment.issue, comment=comment)

    def list_comments(self, issue: Issue, *, since: datetime | None = None) -> list[Comment]:
        return [c for c in issue.comments if since is None or c.updated_at >= since]


def _check_update(issue: Issue, fields: dict[str, object]) -> tuple[IssueState, StateReason | None]:
    if "title" in fields and (fields["title"] is None or str(fields["title"]).strip() == ""):
        raise missing_field("Issue", "title")
    if "body" in fields:
        _check_body(fields["body"])
    state = fields.get("state", issue.state.value)
    if state not in ("open", "closed"):
        raise invalid_field("Issue", "state", str(state))
    reason = fields.get("state_reason")
    if reason is not None and reason not in {r.value for r in StateReason}:
        raise invalid_field("Issue", "state_reason", str(reason))
    return IssueState(state), None if reason is None else StateReason(str(reason))


def _check_body(body: object) -> None:
    if body is not None and not isinstance(body, str):
        raise invalid_field("Issue", "body", str(body))


def _check_association(association: str | None) -> None:
    if association is not None and association not in AUTHOR_ASSOCIATIONS:
        raise invalid_field("Issue", "author_association", association)


def _list(value: object, field: str) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list):
        raise invalid_field("Issue", field, str(value))
    return value


def _names(value: object, field: str) -> list[str]:
    # Labels may be given as names or as {"name": ...} objects.
    names: list[str] = []
    for item in _list(value, field):
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or name.strip() == "":
            raise invalid_field("Label", "name", str(name))
        names.append(name)
    return names


def _unique[T](items: Iterable[T]) -> list[T]:
    seen: set[int] = set()
    unique: list[T] = []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            unique.append(item)
    return unique


def _matches_assignee(issue: Issue, assignee: str | None) -> bool:
    if assignee is None or (assignee == "*" and issue.assignees):
        return True
    if assignee == "none":
        return not issue.assignees
    return any(user.login.lower() == (assignee or "").lower() for user in issue.assignees)

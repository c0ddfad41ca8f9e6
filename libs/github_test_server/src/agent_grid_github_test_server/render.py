"""State records → GitHub's REST JSON shapes (API version 2022-11-28), also used inside webhook payloads.

Every field the OpenAPI description marks as required is present; URLs point back at this server.
"""

import base64
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from agent_grid_github_test_server.entities import (
    App,
    Comment,
    Installation,
    Issue,
    IssueEvent,
    IssueState,
    Label,
    Repo,
    User,
)
from agent_grid_github_test_server.store import Store

type Json = dict[str, object]


def node_id(type_name: str, record_id: int) -> str:
    """GitHub's legacy global node id: base64 of ``0<len>:<Type><id>`` (``MDU6SXNzdWUx`` is Issue 1)."""
    return base64.b64encode(f"0{len(type_name)}:{type_name}{record_id}".encode()).decode()


def timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Urls:
    api: str  # REST root with a trailing slash, e.g. http://127.0.0.1:8080/
    web: str  # where html_url links point, with a trailing slash

    def repo(self, repo: Repo) -> str:
        return f"{self.api}repos/{repo.full_name}"

    def issue(self, issue: Issue) -> str:
        return f"{self.repo(issue.repo)}/issues/{issue.number}"

    def issue_html(self, issue: Issue) -> str:
        return f"{self.web}{issue.repo.full_name}/issues/{issue.number}"


class Renderer:
    def __init__(self, store: Store, urls: Urls) -> None:
        self.store = store
        self.urls = urls

    def user(self, user: User | None) -> Json | None:
        if user is None:
            return None
        api = f"{self.urls.api}users/{quote(user.login)}"
        html = (
            f"{self.urls.web}apps/{user.login.removesuffix('[bot]')}"
            if user.type == "Bot"
            else self.urls.web + user.login
        )
        return {
            "login": user.login,
            "id": user.id,
            "node_id": node_id(user.type, user.id),
            "avatar_url": f"{self.urls.web}avatars/u/{user.id}?v=4",
            "gravatar_id": "",
            "url": api,
            "html_url": html,
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def organization(self, org: User) -> Json:
        """``organization-simple-webhooks``: the ``organization`` key of a webhook payload."""
        api = f"{self.urls.api}orgs/{org.login}"
        return {
            "login": org.login,
            "id": org.id,
            "node_id": node_id("Organization", org.id),
            "url": api,
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events",
            "hooks_url": f"{api}/hooks",
            "issues_url": f"{api}/issues",
            "members_url": f"{api}/members{{/member}}",
            "public_members_url": f"{api}/public_members{{/member}}",
            "avatar_url": f"{self.urls.web}avatars/u/{org.id}?v=4",
            "description": None,
        }

    def repository(self, repo: Repo, *, full: bool = False, viewer: User | None = None) -> Json:
        api = self.urls.repo(repo)
        html = self.urls.web + repo.full_name
        open_issues = sum(1 for issue in repo.issues.values() if issue.state == IssueState.OPEN)
        body: Json = {
            "id": repo.id,
            "node_id": node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.user(repo.owner),
            "html_url": html,
            "description": repo.description,
            "fork": False,
            "url": api,
            **{f"{name}_url": f"{api}/{path}" for name, path in _REPO_LINKS.items()},
            "created_at": timestamp(repo.created_at),
            "updated_at": timestamp(repo.updated_at),
            "pushed_at": timestamp(repo.created_at),
            "git_url": f"git://{_host(self.urls.web)}/{repo.full_name}.git",
            "ssh_url": f"git@{_host(self.urls.web)}:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": True,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if repo.private else "public",
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": "main",
        }
        if full:
            body |= {
                "network_count": 0,
                "subscribers_count": 0,
                "temp_clone_token": None,
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": True,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
            }
            if viewer is not None:
                body["permissions"] = self._permissions(repo, viewer)
            if repo.owner.type == "Organization":
                body["organization"] = self.user(repo.owner)
        return body

    def _permissions(self, repo: Repo, viewer: User) -> Json:
        association = self.store.association(repo, viewer)
        writer = association in ("OWNER", "MEMBER", "COLLABORATOR") or viewer.type == "Bot"
        admin = association == "OWNER"
        return {"admin": admin, "maintain": admin, "push": writer, "triage": writer, "pull": True}

    def label(self, repo: Repo, label: Label) -> Json:
        return {
            "id": label.id,
            "node_id": node_id("Label", label.id),
            "url": f"{self.urls.repo(repo)}/labels/{quote(label.name)}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
            # Newer than @octokit/openapi 23's description, present in GitHub's answers and githubkit's models.
            "archived_at": None,
            "archived_by": None,
        }

    def issue(self, issue: Issue, *, single: bool = False) -> Json:
        """An issue as listed; ``single`` adds what GET/PATCH of one issue also carry (``closed_by``)."""
        api = self.urls.issue(issue)
        repo = issue.repo
        body: Json = {
            "url": api,
            "repository_url": self.urls.repo(repo),
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": self.urls.issue_html(issue),
            "id": issue.id,
            "node_id": node_id("Issue", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self.user(issue.user),
            "labels": [self.label(repo, label) for label in issue.labels],
            "state": issue.state.value,
            "locked": False,
            "assignee": self.user(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self.user(user) for user in issue.assignees],
            "milestone": None,
            "comments": len(issue.comments),
            "created_at": timestamp(issue.created_at),
            "updated_at": timestamp(issue.updated_at),
            "closed_at": timestamp(issue.closed_at),
            "author_association": self.store.association_of(issue),
            "type": None,
            "active_lock_reason": None,
            "sub_issues_summary": self.sub_issues_summary(issue),
            "issue_dependencies_summary": self.dependencies_summary(issue),
            "body": issue.body,
            "reactions": _reactions(f"{api}/reactions"),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": self.app(issue.via_app),
            "state_reason": None if issue.state_reason is None else issue.state_reason.value,
        }
        parent = self.store.parent_of(issue)
        if parent is not None:
            body["parent_issue_url"] = self.urls.issue(parent)
        if single:
            body["closed_by"] = self.user(issue.closed_by)
        return body

    def sub_issues_summary(self, issue: Issue) -> Json:
        children = self.store.sub_issues(issue)
        completed = sum(1 for child in children if child.state == IssueState.CLOSED)
        percent = completed * 100 // len(children) if children else 0
        return {"total": len(children), "completed": completed, "percent_completed": percent}

    def dependencies_summary(self, issue: Issue) -> Json:
        blocked_by = self.store.blocked_by(issue)
        blocking = self.store.blocking(issue)
        return {
            "blocked_by": sum(1 for i in blocked_by if i.state == IssueState.OPEN),
            "blocking": sum(1 for i in blocking if i.state == IssueState.OPEN),
            "total_blocked_by": len(blocked_by),
            "total_blocking": len(blocking),
        }

    def comment(self, comment: Comment) -> Json:
        issue = comment.issue
        api = f"{self.urls.repo(issue.repo)}/issues/comments/{comment.id}"
        return {
            "id": comment.id,
            "node_id": node_id("IssueComment", comment.id),
            "url": api,
            "html_url": f"{self.urls.issue_html(issue)}#issuecomment-{comment.id}",
            "body": comment.body,
            "user": self.user(comment.user),
            "created_at": timestamp(comment.created_at),
            "updated_at": timestamp(comment.updated_at),
            "issue_url": self.urls.issue(issue),
            "author_association": comment.author_association or self.store.association(issue.repo, comment.user),
            "performed_via_github_app": self.app(comment.via_app),
            "reactions": _reactions(f"{api}/reactions"),
        }

    def issue_event(self, issue: Issue, event: IssueEvent) -> Json:
        """``labeled-issue-event`` / ``unlabeled-issue-event``, as the issue's events list them."""
        return {
            "id": event.id,
            "node_id": node_id(f"{event.event.capitalize()}Event", event.id),
            "url": f"{self.urls.repo(issue.repo)}/issues/events/{event.id}",
            "actor": self.user(event.actor),
            "event": event.event,
            "commit_id": None,
            "commit_url": None,
            "created_at": timestamp(event.created_at),
            "performed_via_github_app": self.app(event.via_app),
            "label": {"name": event.label.name, "color": event.label.color},
        }

    def collaborator_permission(self, repo: Repo, user: User) -> Json:
        """``repository-collaborator-permission``: the role's own name, and its legacy base permission.

        The legacy field reads maintain as write and triage as read, as GitHub's does.
        """
        role = self.store.role(repo, user)
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        collaborator = self.user(user) or {}
        permissions = {
            "pull": role != "none",
            "triage": role in ("triage", "write", "maintain", "admin"),
            "push": legacy in ("write", "admin"),
            "maintain": role in ("maintain", "admin"),
            "admin": role == "admin",
        }
        return {
            "permission": legacy,
            "role_name": role,
            "user": {**collaborator, "permissions": permissions, "role_name": role},
        }

    def app(self, app: App | None) -> Json | None:
        if app is None:
            return None
        return {
            "id": app.id,
            "slug": app.slug,
            "node_id": node_id("Integration", app.id),
            "client_id": app.client_id,
            "owner": self.user(app.owner),
            "name": app.name,
            "description": None,
            "external_url": f"{self.urls.web}apps/{app.slug}",
            "html_url": f"{self.urls.web}apps/{app.slug}",
            "created_at": timestamp(app.created_at),
            "updated_at": timestamp(app.created_at),
            "permissions": dict(app.permissions),
            "events": list(app.events),
        }

    def installation(self, installation: Installation) -> Json:
        api = f"{self.urls.api}app/installations/{installation.id}"
        account = installation.account
        return {
            "id": installation.id,
            "account": self.user(account),
            "repository_selection": installation.repository_selection,
            "access_tokens_url": f"{api}/access_tokens",
            "repositories_url": f"{self.urls.api}installation/repositories",
            "html_url": f"{self.urls.web}settings/installations/{installation.id}",
            "app_id": installation.app.id,
            "client_id": installation.app.client_id,
            "app_slug": installation.app.slug,
            "target_id": account.id,
            "target_type": account.type,
            "permissions": dict(installation.permissions),
            "events": list(installation.app.events),
            "created_at": timestamp(installation.created_at),
            "updated_at": timestamp(installation.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def simple_installation(self, installation: Installation) -> Json:
        return {"id": installation.id, "node_id": node_id("IntegrationInstallation", installation.id)}


_REPO_LINKS = {
    "forks": "forks",
    "keys": "keys{/key_id}",
    "collaborators": "collaborators{/collaborator}",
    "teams": "teams",
    "hooks": "hooks",
    "issue_events": "issues/events{/number}",
    "events": "events",
    "assignees": "assignees{/user}",
    "branches": "branches{/branch}",
    "tags": "tags",
    "blobs": "git/blobs{/sha}",
    "git_tags": "git/tags{/sha}",
    "git_refs": "git/refs{/sha}",
    "trees": "git/trees{/sha}",
    "statuses": "statuses/{sha}",
    "languages": "languages",
    "stargazers": "stargazers",
    "contributors": "contributors",
    "subscribers": "subscribers",
    "subscription": "subscription",
    "commits": "commits{/sha}",
    "git_commits": "git/commits{/sha}",
    "comments": "comments{/number}",
    "issue_comment": "issues/comments{/number}",
    "contents": "contents/{+path}",
    "compare": "compare/{base}...{head}",
    "merges": "merges",
    "archive": "{archive_format}{/ref}",
    "downloads": "downloads",
    "issues": "issues{/number}",
    "pulls": "pulls{/number}",
    "milestones": "milestones{/number}",
    "notifications": "notifications{?since,all,participating}",
    "labels": "labels{/name}",
    "releases": "releases{/id}",
    "deployments": "deployments",
}


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _reactions(url: str) -> Json:
    counts = dict.fromkeys(("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"), 0)
    return {"url": url, "total_count": 0, **counts}

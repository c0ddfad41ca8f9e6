"""Seed documents (JSON) → calls on the handle: the CLI's ``--seed`` file and ``POST /_control/seed``.

A document maps section names to lists of keyword arguments for the matching ``add_*`` method, applied in
the order below so later sections can refer to earlier ones. Example::

    {"users": [{"login": "alice"}], "organizations": [{"login": "acme", "members": ["alice"]}],
     "repos": [{"owner": "acme", "name": "demo"}], "tokens": [{"login": "alice", "token": "ghp_alice"}],
     "issues": [{"owner": "acme", "repo": "demo", "title": "Hello", "author": "alice"},
                {"owner": "acme", "repo": "demo", "title": "Part", "author": "alice"}],
     "sub_issues": [{"owner": "acme", "repo": "demo", "parent": 1, "child": 2}],
     "webhooks": [{"url": "http://127.0.0.1:8001/webhooks/github", "secret": "s3cret"}]}

An app may give ``public_key_path`` (a PEM file) instead of ``public_key_pem``.
"""

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_grid_github_test_server.errors import ApiError

if TYPE_CHECKING:
    from agent_grid_github_test_server.public_server import FakeGitHub


def _sections(github: "FakeGitHub") -> dict[str, Callable[..., object]]:
    return {
        "users": github.add_user,
        "organizations": github.add_organization,
        "repos": github.add_repo,
        "labels": github.add_label,
        "tokens": github.add_token,
        "apps": _add_app(github),
        "installations": github.add_installation,
        "issues": github.add_issue,
        "comments": github.add_comment,
        "sub_issues": _add_sub_issue(github),
        "blocked_by": _add_blocked_by(github),
        "webhooks": github.add_webhook,
    }


def _add_sub_issue(github: "FakeGitHub") -> Callable[..., object]:
    def add(owner: str, repo: str, parent: int, child: int) -> None:
        github.add_sub_issue(github.issue(owner, repo, parent), github.issue(owner, repo, child))

    return add


def _add_blocked_by(github: "FakeGitHub") -> Callable[..., object]:
    def add(owner: str, repo: str, number: int, blocking: int) -> None:
        github.add_blocked_by(github.issue(owner, repo, number), github.issue(owner, repo, blocking))

    return add


def _add_app(github: "FakeGitHub") -> Callable[..., object]:
    def add(public_key_path: str | None = None, **kwargs: Any) -> object:
        if public_key_path is not None:
            kwargs["public_key_pem"] = Path(public_key_path).read_text()
        return github.add_app(**kwargs)

    return add


def apply_seed(github: "FakeGitHub", document: Mapping[str, object]) -> dict[str, list[dict[str, object]]]:
    """Apply ``document``; answer what each entry created, by section (ids, numbers, tokens, hook ids)."""
    sections = _sections(github)
    created: dict[str, list[dict[str, object]]] = {}
    unknown = set(document) - set(sections)
    if unknown:
        raise ApiError(422, f"unknown seed sections: {sorted(unknown)}; known: {list(sections)}")
    for name, add in sections.items():
        entries = document.get(name, [])
        if not isinstance(entries, list):
            raise ApiError(422, f"seed section {name!r} must be a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise ApiError(422, f"seed section {name!r} holds objects, not {entry!r}")
            try:
                result = add(**entry)
            except TypeError as error:
                raise ApiError(422, f"seed section {name!r}: {error}") from None
            created.setdefault(name, []).append(_json(name, result))
    return created


def _json(section: str, result: object) -> dict[str, object]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if section == "tokens":
        return {"token": result}
    if section == "webhooks":
        return {"hook_id": result}
    return {}

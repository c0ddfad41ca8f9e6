"""What the GitHub test server hands back to tests and the demo: seeded records, the request log, deliveries.

Imported by tests of any package and by the local demo. Plain frozen records; backward-compatible changes only.
"""

import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

__all__ = [
    "LoggedRequest",
    "SeededApp",
    "SeededComment",
    "SeededInstallation",
    "SeededIssue",
    "SeededRepo",
    "SeededUser",
    "WebhookDelivery",
]


@dataclass(frozen=True)
class SeededUser:
    """An account: a person (``User``), an ``Organization`` or an app's ``Bot``."""

    login: str
    id: int
    type: Literal["User", "Organization", "Bot"]


@dataclass(frozen=True)
class SeededRepo:
    """A repository, owned by a user or an organization."""

    owner: str
    name: str
    id: int

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class SeededIssue:
    """An issue: ``number`` addresses it in URLs, ``id`` in sub-issue and dependency bodies."""

    owner: str
    repo: str
    number: int
    id: int
    node_id: str


@dataclass(frozen=True)
class SeededComment:
    """An issue comment."""

    id: int
    issue_number: int
    node_id: str


@dataclass(frozen=True)
class SeededApp:
    """A GitHub App; its installation tokens act as ``bot_login`` (``<slug>[bot]``)."""

    id: int
    slug: str
    client_id: str
    bot_login: str


@dataclass(frozen=True)
class SeededInstallation:
    """An installation of an app on a user or organization account."""

    id: int
    app_id: int
    account: str


@dataclass(frozen=True)
class LoggedRequest:
    """One API request as the server answered it.

    ``at_s`` is ``time.monotonic()`` when the request arrived, for asserting the spacing of writes; ``login``
    is the authenticated account (an app's slug for JWT calls), None when authentication failed.
    """

    method: str
    path: str
    query: str
    status: int
    at_s: float
    login: str | None
    request_id: str
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        """The query string as a dict (last value wins)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def json(self) -> object:
        """The request body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to deliver a webhook: ``status_code`` when the receiver answered, ``error`` when not."""

    guid: str
    hook_id: int
    event: str
    action: str | None
    body: bytes
    status_code: int | None
    error: str | None
    redelivery: bool
    at_s: float

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def payload(self) -> dict[str, object]:
        """The delivered JSON payload."""
        parsed: dict[str, object] = json.loads(self.body)
        return parsed

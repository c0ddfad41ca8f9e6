"""The records agent-grid hides in what it writes on GitHub, signed, and reading them back (pure).

A status comment ends with the issue's record, the roll-up block with the tree's: one HTML comment each, holding
JSON and its signature, invisible once GitHub renders the text. They are what a ledger is rebuilt from
(``coordinator.decisions.public_rebuild``), so they must be agent-grid's own: anyone who can edit an issue's
description can type a roll-up block, and agents write through agent-grid's account. Each record is signed
(HMAC-SHA256) with a key only the coordinator holds (:class:`RecordKey`), for its kind and for the issue it is
about (a record copied to another issue does not verify there), and read back only when its signature verifies:
a forged, copied, edited or unsigned record (one written before records were signed) reads as none. Text from
people and agents is made :func:`inert` before agent-grid writes it, so it cannot pass for its markers or records.

Nothing in a record is an authority: authorisation comes only from what GitHub itself vouches for (who applied
the opt-in label) and from trusted people's own triggers, never from text, signed or not.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from agent_grid_tracker.public_github import GitHubSettings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from coordinator.decisions.public_rebuild import IssueRecord, TreeRecord

__all__ = [
    "RecordKey",
    "RecordsSettings",
    "inert",
    "issue_record",
    "read_issue_record",
    "read_tree_record",
    "tree_record",
]

_ISSUE = "record"
_TREE = "tree-record"
# 2: signed. Version 1 records (unsigned) carry no signature, so they never verify: they read as none.
_VERSION = 2
_MIN_SECRET_BYTES = 16
# Domain separation: a key derived from a credential (or from the configured secret) signs records and nothing
# else, and nothing signed with the credential itself can pass for a record.
_KEY_LABEL = b"agent-grid coordinator records v1\0"
_SIGNATURE = r"[A-Za-z0-9_-]{43}"  # 32 bytes of HMAC-SHA256, base64url without padding
_Count = Annotated[int, Field(ge=0)]
_Money = Annotated[float, Field(ge=0)]


class RecordsSettings(BaseModel):
    """The key agent-grid's records on GitHub are signed with (``COORDINATOR_RECORDS__…``).

    ``secret`` (at least 16 bytes) when set; unset, a key derived from the tracker's credential (its token, or its
    App's private key), so that nothing more need be configured. Set it when agents are given the coordinator's
    own GitHub token, and keep it when rotating the credential (a new key leaves older records unread: a ledger
    lost then is rebuilt from what GitHub shows of later decisions only). Coordinators sharing a ledger share it.
    """

    secret: SecretStr | None = None

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < _MIN_SECRET_BYTES:
            raise ValueError(f"the records secret must be at least {_MIN_SECRET_BYTES} bytes")
        return value


@dataclass(frozen=True)
class RecordKey:
    """The key that signs agent-grid's records: from :meth:`configured`, or :meth:`ephemeral`."""

    material: bytes = field(repr=False)

    @classmethod
    def configured(cls, settings: RecordsSettings, github: GitHubSettings | None) -> "RecordKey | None":
        """The configured secret's key, else one derived from the tracker's credential; None without either."""
        if settings.secret is not None:
            secret = settings.secret.get_secret_value()
        elif github is not None and github.app is not None:
            secret = github.app.private_key.get_secret_value()
        elif github is not None and github.token is not None:
            secret = github.token.get_secret_value()
        else:
            return None
        # Stripped: one credential configured with and without a trailing newline is one key.
        return cls(hmac.new(secret.strip().encode(), _KEY_LABEL, hashlib.sha256).digest())

    @classmethod
    def ephemeral(cls) -> "RecordKey":
        """A random key: what it signs verifies only in this process (a coordinator given no credential: tests)."""
        return cls(secrets.token_bytes(32))

    def sign(self, kind: str, subject: str, payload: str) -> str:
        """The signature of a ``kind`` record about ``subject`` (an issue's key) holding ``payload``."""
        message = b"\0".join(part.encode() for part in (kind, subject, payload))
        digest = hmac.new(self.material, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verifies(self, kind: str, subject: str, payload: str, signature: str) -> bool:
        """Whether ``signature`` is this key's for that record (in constant time)."""
        return hmac.compare_digest(self.sign(kind, subject, payload).encode(), signature.encode())


def inert(text: str) -> str:
    """Text from people or agents, with no HTML comment in it: it cannot pass for agent-grid's markers or records.

    agent-grid's markers (``<!-- agent-grid:… -->``) find its status comment, its workpads and its roll-up block;
    written as ``&lt;!--`` they read the same to people and are nothing to agent-grid. No other HTML comment is
    left either: nothing written through agent-grid's account is hidden from the people who read it.
    """
    return text.replace("<!--", "&lt;!--")


class _Tree(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runs: _Count = 0
    cost_usd: _Money = 0.0
    tokens: _Count = 0
    authorised_by: str | None = None
    killed: bool = False


class _Issue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runs: _Count = 0
    consecutive_failures: _Count = 0
    tree: _Tree = _Tree()
    run: str | None = None
    mode: str = "work"
    agent_kind: str = ""
    authorised_by: str | None = None


def issue_record(record: IssueRecord, *, issue_key: str, key: RecordKey) -> str:
    """The hidden, signed comment that ends the status comment of the issue ``issue_key``."""
    issue = _Issue(
        runs=record.runs,
        consecutive_failures=record.consecutive_failures,
        tree=_tree(record.tree),
        run=record.running_run,
        mode=record.mode,
        agent_kind=record.agent_kind,
        authorised_by=record.authorised_by,
    )
    return _hidden(_ISSUE, issue, subject=issue_key, key=key)


def tree_record(record: TreeRecord, *, root_key: str, key: RecordKey) -> str:
    """The hidden, signed comment that ends the roll-up block of the tree rooted at ``root_key``."""
    return _hidden(_TREE, _tree(record), subject=root_key, key=key)


def read_issue_record(text: str, *, issue_key: str, key: RecordKey, recorded_at: datetime) -> IssueRecord | None:
    """The issue record in a status comment's text, if there is one signed with ``key`` for ``issue_key``."""
    issue = _read(text, _ISSUE, _Issue, subject=issue_key, key=key)
    if issue is None:
        return None
    return IssueRecord(
        runs=issue.runs,
        consecutive_failures=issue.consecutive_failures,
        tree=_tree_of(issue.tree),
        running_run=issue.run,
        mode=issue.mode,
        agent_kind=issue.agent_kind,
        authorised_by=issue.authorised_by,
        recorded_at=recorded_at,
    )


def read_tree_record(text: str, *, root_key: str, key: RecordKey) -> TreeRecord | None:
    """The tree record in a root's roll-up block, if there is one signed with ``key`` for ``root_key``."""
    tree = _read(text, _TREE, _Tree, subject=root_key, key=key)
    return _tree_of(tree) if tree is not None else None


def _hidden(name: str, model: BaseModel, *, subject: str, key: RecordKey) -> str:
    # An HTML comment ends at the first "--"; JSON has it only inside strings, where "\u002d" reads the same.
    # Nor does a payload hold "<" or ">", so a reader's match never runs across another record or comment.
    payload = json.dumps({"v": _VERSION, **model.model_dump()}, separators=(",", ":"))
    payload = payload.replace("--", "-\\u002d").replace("<", "\\u003c").replace(">", "\\u003e")
    return f"<!-- agent-grid:{name} {payload} sig:{key.sign(name, subject, payload)} -->"


def _read[M: BaseModel](text: str, name: str, model: type[M], *, subject: str, key: RecordKey) -> M | None:
    # The payload holds no "<" or ">" (see _hidden), so a match can neither start inside another (an unterminated
    # one before it cannot swallow it) nor end past its own. The last record whose signature verifies:
    # agent-grid's own comes after anything quoted (which it also renders inert).
    found = re.findall(rf"<!-- agent-grid:{re.escape(name)} (\{{[^<>]*?\}}) sig:({_SIGNATURE}) -->", text)
    for payload, signature in reversed(found):
        if key.verifies(name, subject, payload, signature):
            try:
                return model.model_validate_json(payload)
            except ValidationError:
                return None
    return None


def _tree(record: TreeRecord) -> _Tree:
    return _Tree(
        runs=record.runs,
        cost_usd=record.cost_usd,
        tokens=record.tokens,
        authorised_by=record.authorised_by,
        killed=record.killed,
    )


def _tree_of(tree: _Tree) -> TreeRecord:
    return TreeRecord(
        runs=tree.runs,
        cost_usd=tree.cost_usd,
        tokens=tree.tokens,
        authorised_by=tree.authorised_by,
        killed=tree.killed,
    )

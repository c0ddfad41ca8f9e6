"""Run tokens: how an agent proves to the services which run it is, and nothing more.

The grid worker mints one per run with a secret it shares with the coordinator and hands it to the agent
(``AGENT_GRID_RUN_TOKEN``); the coordinator's tool endpoints verify it and look the run up in their ledger
for its scope (its issue tree, its caps). The token names the run and when it stops being valid; it grants
no GitHub access and is useless after the run's wall clock. Standard library only, like every contract.

Format: ``agr1.<run_id>.<expires_at unix seconds>.<base64url HMAC-SHA256 of "agr1.<run_id>.<expires_at>">``.
"""

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime

__all__ = ["InvalidRunToken", "RunToken", "mint_run_token", "verify_run_token"]

_PREFIX = "agr1"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class InvalidRunToken(Exception):
    """The token is malformed, forged or expired; the message says which (never the token itself)."""


class RunToken:
    """A verified token: the run it names and when it expires."""

    __slots__ = ("expires_at", "run_id")

    def __init__(self, run_id: str, expires_at: datetime) -> None:
        self.run_id = run_id
        self.expires_at = expires_at


def mint_run_token(secret: bytes, run_id: str, expires_at: datetime) -> str:
    """A token for ``run_id`` valid until ``expires_at``.

    Raises:
        ValueError: the run id has characters a token cannot carry, or the secret is too short.
    """
    if len(secret) < 16:
        raise ValueError("the run token secret must be at least 16 bytes")
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} cannot be carried in a run token")
    claims = f"{_PREFIX}.{run_id}.{int(expires_at.timestamp())}"
    return f"{claims}.{_sign(secret, claims)}"


def verify_run_token(secret: bytes, token: str, *, now: datetime | None = None) -> RunToken:
    """The run a token names, if its signature holds and it has not expired.

    Raises:
        InvalidRunToken: malformed, wrong signature, or expired.
    """
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != _PREFIX or not _RUN_ID.match(parts[1]) or not parts[2].isdigit():
        raise InvalidRunToken("malformed run token")
    claims = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3], _sign(secret, claims)):
        raise InvalidRunToken("run token signature does not match")
    expires_at = datetime.fromtimestamp(int(parts[2]), UTC)
    if (now or datetime.now(UTC)) >= expires_at:
        raise InvalidRunToken("run token expired")
    return RunToken(parts[1], expires_at)


def _sign(secret: bytes, claims: str) -> str:
    digest = hmac.new(secret, claims.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

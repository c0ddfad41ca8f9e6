"""Who may call the coordinator's ``/api``: the bearer token, or the dashboard's session cookie.

Imported by the API and the dashboard of the coordinator. A browser's ``EventSource`` cannot send an
``Authorization`` header, so the dashboard logs in once with the token and then carries a session cookie:
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), and signed with a key derived
from the token, so it is worth nothing elsewhere (the local grid shares one token between services) and
rotating the token ends every session. Every comparison is constant-time.
"""

import hashlib
import hmac
from datetime import UTC, datetime

from fastapi import HTTPException, Request, Response, status
from pydantic import SecretStr

__all__ = ["SESSION_COOKIE", "ApiAuth", "same_origin"]

SESSION_COOKIE = "agent_grid_session"
"""The name of the dashboard's session cookie."""

_SESSION_VERSION = "v1"
_KEY_CONTEXT = b"agent-grid coordinator dashboard session\0"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiAuth:
    """Checks a request's bearer token or session cookie against the API token; issues session cookies."""

    def __init__(self, token: SecretStr | None) -> None:
        """``token``: the API token (``COORDINATOR_API__TOKEN``); None refuses every call and every login."""
        self._token = token.get_secret_value().encode() if token is not None else None
        self._key = hashlib.sha256(_KEY_CONTEXT + self._token).digest() if self._token is not None else None

    @property
    def enabled(self) -> bool:
        """A token is configured: calls and logins can succeed."""
        return self._token is not None

    def token_matches(self, given: str) -> bool:
        """``given`` is the API token."""
        return self._token is not None and hmac.compare_digest(given.strip().encode(), self._token)

    def new_session(self, *, now: datetime, ttl_s: float) -> str:
        """A session cookie value valid until ``now + ttl_s``.

        Raises:
            RuntimeError: no token is configured, so no session can be valid.
        """
        expires = int(now.timestamp() + ttl_s)
        return f"{_SESSION_VERSION}.{expires}.{self._mac(expires)}"

    def session_valid(self, value: str, *, now: datetime) -> bool:
        """``value`` is a session this token issued, and it has not expired."""
        version, _, rest = value.partition(".")
        expires_text, _, mac = rest.partition(".")
        if self._key is None or version != _SESSION_VERSION or not (expires_text.isascii() and expires_text.isdigit()):
            return False
        expires = int(expires_text)
        return hmac.compare_digest(mac.encode(), self._mac(expires).encode()) and now.timestamp() < expires

    def check(self, request: Request) -> None:
        """Let the request through, or raise the HTTP error that refuses it.

        An ``Authorization`` header is judged alone; without one, the session cookie. A request authorised by
        the cookie that changes something must come from the coordinator's own origin: SameSite does not tell
        ports apart, so a page served from another port of the same host would otherwise ride the cookie.

        Raises:
            HTTPException: 401 without a valid token or session, or with no token configured; 403 for a
                cookie-authorised change from another origin.
        """
        if self._token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the API is disabled: set COORDINATOR_API__TOKEN")
        header = request.headers.get("authorization")
        if header is not None:
            if not self.token_matches(header.removeprefix("Bearer ")):
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token")
            return
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None or not self.session_valid(cookie, now=datetime.now(UTC)):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token or session")
        if request.method not in _SAFE_METHODS and not same_origin(request):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a change made with the session must come from its origin")

    def set_session(self, response: Response, request: Request, *, ttl_s: float) -> None:
        """Put a new session cookie on ``response`` (Secure when the request came over HTTPS)."""
        response.set_cookie(
            SESSION_COOKIE,
            self.new_session(now=datetime.now(UTC), ttl_s=ttl_s),
            max_age=int(ttl_s),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear_session(response: Response) -> None:
        """Tell the browser to forget its session cookie."""
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    def _mac(self, expires: int) -> str:
        if self._key is None:
            raise RuntimeError("no API token is configured: no session can be issued")
        return hmac.new(self._key, f"{_SESSION_VERSION}.{expires}".encode(), hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """The request's ``Origin`` header names the host it was sent to (browsers send it with every POST)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if not origin or not host:
        return False
    return origin in (f"http://{host}", f"https://{host}")

"""Who is calling: a token (personal or installation) or a GitHub App's RS256 JWT. Pure and synchronous."""

import re
from dataclasses import dataclass

import jwt

from agent_grid_github_test_server.entities import App, Token
from agent_grid_github_test_server.errors import ApiError, bad_credentials
from agent_grid_github_test_server.store import Store

# The routes a GitHub App authenticates to with its JWT rather than a token (as githubkit's APP_ROUTES).
_APP_ROUTES = re.compile(
    r"^/(app(/.*)?|repos/[^/]+/[^/]+/installation|orgs/[^/]+/installation|users/[^/]+/installation)$"
)
_JWT_DOCS = "https://docs.github.com/rest"
# GitHub refuses app JWTs that expire more than ten minutes ahead; allow a little clock drift on top.
_MAX_JWT_LIFETIME_S = 600 + 30


@dataclass(frozen=True)
class Caller:
    token: Token | None = None
    app: App | None = None

    @property
    def login(self) -> str | None:
        if self.token is not None:
            return self.token.user.login
        return None if self.app is None else self.app.slug

    @property
    def rate_key(self) -> str:
        if self.token is not None:
            return self.token.value
        return "anonymous" if self.app is None else f"app:{self.app.id}"


def is_app_route(path: str) -> bool:
    return bool(_APP_ROUTES.match(path))


def credential_of(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not value.strip():
        return None
    return value.strip()


def authenticate(store: Store, path: str, authorization: str | None, now_s: float) -> Caller:
    """Resolve the caller, or raise 401 the way GitHub words it."""
    value = credential_of(authorization)
    if value is None:
        raise ApiError(401, "Requires authentication", documentation_url=_JWT_DOCS)
    if is_app_route(path):
        return Caller(app=verify_app_jwt(store, value, now_s))
    token = store.resolve_token(value)
    if token is None:
        raise bad_credentials()
    return Caller(token=token)


def verify_app_jwt(store: Store, value: str, now_s: float) -> App:
    try:
        claims = jwt.decode(value, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _jwt_error("A JSON web token could not be decoded") from None
    app = _app_for(store, claims.get("iss"))
    if app is None:
        raise _jwt_error("A JSON web token could not be decoded")
    try:
        verified = jwt.decode(
            value,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"require": ["exp", "iat", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise _jwt_error("A JSON web token could not be decoded") from None
    exp, iat = verified["exp"], verified["iat"]
    if not isinstance(iat, int) or iat > now_s + 60:
        raise _jwt_error(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
        )
    if not isinstance(exp, int) or exp <= now_s:
        raise _jwt_error(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the "
            "assertion expires"
        )
    if exp - now_s > _MAX_JWT_LIFETIME_S:
        raise _jwt_error("'Expiration time' claim ('exp') is too far in the future")
    return app


def _app_for(store: Store, issuer: object) -> App | None:
    for app in store.apps.values():
        if str(issuer) in (str(app.id), app.client_id):
            return app
    return None


def _jwt_error(message: str) -> ApiError:
    return ApiError(401, message, documentation_url=_JWT_DOCS)

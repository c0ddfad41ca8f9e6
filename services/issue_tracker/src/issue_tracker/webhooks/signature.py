"""GitHub webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``."""

import hashlib
import hmac

_PREFIX = "sha256="


def signature_for(secret: bytes, body: bytes) -> str:
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_is_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    # SHA-256 only: the legacy X-Hub-Signature (SHA-1) header is never consulted, even when it is the only one.
    if not header or not header.startswith(_PREFIX):
        return False
    return hmac.compare_digest(signature_for(secret, body), header.strip())

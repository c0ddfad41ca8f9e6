"""Errors the GitHub test server raises to its Python callers (tests, the demo's seeding).

Imported by tests of any package. Backward-compatible changes only.
"""

__all__ = ["GitHubTestServerError"]


class GitHubTestServerError(Exception):
    """A seeding or control call the server refused; ``status`` is the HTTP status GitHub would answer."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        """Keep GitHub's status beside the message."""
        super().__init__(message)
        self.status = status

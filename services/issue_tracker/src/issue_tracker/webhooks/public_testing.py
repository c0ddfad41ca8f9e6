"""Helpers for tests (and the demo) that drive the webhook endpoint.

Sign deliveries the way GitHub does, and read GitHub's published example payloads
(npm ``@octokit/webhooks-examples``).
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from issue_tracker.webhooks.signature import signature_for

__all__ = ["WebhookExample", "signed_headers", "webhook_examples"]


@dataclass(frozen=True)
class WebhookExample:
    """One published example delivery."""

    source: str
    event: str
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        """The payload's ``action``, when the event has actions."""
        action = self.payload.get("action")
        return action if isinstance(action, str) else None


def signed_headers(
    secret: bytes,
    body: bytes,
    *,
    event: str,
    delivery: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers GitHub sends with a delivery of ``body``, signed with ``secret``."""
    return {
        "content-type": content_type,
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": signature_for(secret, body),
        "user-agent": "GitHub-Hookshot/agent-grid-tests",
    }


def webhook_examples(package_dir: Path) -> Iterator[WebhookExample]:
    """Every example of every event, for every GitHub edition in the package (``api.github.com``, ``ghes-*``).

    Args:
        package_dir: the installed ``@octokit/webhooks-examples`` package directory.
    """
    for index_path in sorted(package_dir.glob("*/index.json")):
        for event in json.loads(index_path.read_text()):
            for payload in event["examples"]:
                yield WebhookExample(source=index_path.parent.name, event=event["name"], payload=payload)

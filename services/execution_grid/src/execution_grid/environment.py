"""The agent's environment, built from nothing: only what its run needs.

Starting from the worker's environment and deleting secrets would leak every secret someone adds later;
an allow-list leaks nothing by default. The worker's own secrets (AWS credentials, the webhook secret, the
coordinator's API token) are never in the list.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Harmless process plumbing every CLI expects to inherit.
_ALWAYS_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


@dataclass(frozen=True, slots=True)
class RunSecrets:
    """The secrets one run gets: its scoped tracker token and its agent kind's model API key."""

    tracker_token: str | None = None
    api_key_env: str | None = None
    api_key: str | None = None


def agent_environment(
    inherited: Mapping[str, str],
    *,
    passthrough: Iterable[str],
    run_variables: Mapping[str, str],
    adapter_variables: Mapping[str, str],
    secrets: RunSecrets,
) -> dict[str, str]:
    """The complete environment of one agent process.

    Args:
        inherited: the worker's environment, read only for the allowed names.
        passthrough: extra names an operator allows (proxies, CA bundles).
        run_variables: the run's own ``AGENT_GRID_*`` variables, HOME and the like.
        adapter_variables: the agent kind's non-secret settings (no colour, no telemetry).
        secrets: what this run is entitled to.
    """
    env = {name: inherited[name] for name in (*_ALWAYS_INHERITED, *passthrough) if name in inherited}
    env.update(adapter_variables)
    env.update(run_variables)
    if secrets.tracker_token:
        # The names gh, git credential helpers and most agent tool integrations read.
        env["GH_TOKEN"] = env["GITHUB_TOKEN"] = secrets.tracker_token
    if secrets.api_key_env and secrets.api_key:
        env[secrets.api_key_env] = secrets.api_key
    return env

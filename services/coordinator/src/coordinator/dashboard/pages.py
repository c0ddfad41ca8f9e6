"""The dashboard's pages and the fragments its script swaps in when the event stream says something changed."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from agent_grid_runtime.public_transport import QueueDepth

from coordinator.dashboard.html import Html, el, fragment
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.ledger.public_ledger import RunEvent, RunRecord, TreeTotals

_CAP_LABELS = {
    "max_active_runs": "Active runs, all",
    "max_active_runs_per_repo": "Active runs per repository",
    "max_active_runs_per_tree": "Active runs per issue tree",
    "max_active_runs_per_agent_kind": "Active runs per agent kind",
    "max_runs_per_issue": "Runs per issue",
    "max_runs_per_tree": "Runs per tree",
    "max_consecutive_failures": "Failed runs in a row (circuit breaker)",
    "max_cost_usd_per_run": "Cost per run",
    "max_tokens_per_run": "Tokens per run",
    "max_cost_usd_per_tree": "Cost per tree (all its runs)",
    "max_tokens_per_tree": "Tokens per tree (all its runs)",
    "max_cost_usd_per_repo_per_day": "Cost per repository per UTC day",
    "max_tree_depth": "Tree depth",
    "max_tree_size": "Tree size (issues)",
    "max_sub_issues_per_run": "Sub-issues per run",
}
_GOOD_EXITS = frozenset({"success"})
_QUIET_EXITS = frozenset({"cancelled", "budget_exhausted"})


@dataclass(frozen=True)
class Chrome:
    """What every page carries: its assets, where its event stream starts, and whether launches are paused."""

    css_href: str
    js_href: str
    events_url: str | None = None
    paused: bool | None = None


def page(title: str, chrome: Chrome, *main: Html) -> Html:
    """A whole page: the header (navigation, live and paused indicators, log out) around ``main``."""
    signed_in = chrome.events_url is not None
    header = el(
        "header",
        el("a", "agent-grid", class_="brand", href="/dashboard"),
        el("nav", el("a", "Runs", href="/dashboard")) if signed_in else None,
        el("span", "paused", class_="badge paused-badge", title="launches are paused") if signed_in else None,
        el("span", "connecting", id="live", class_="live", data_state="connecting") if signed_in else None,
        el("form", el("button", "Log out", type="submit"), method="post", action="/dashboard/logout")
        if signed_in
        else None,
    )
    body = el(
        "body",
        header,
        el("div", id="flash", role="status", aria_live="polite"),
        el("main", *main),
        data_events=chrome.events_url,
        data_paused=None if chrome.paused is None else str(chrome.paused).lower(),
    )
    head = el(
        "head",
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("title", f"{title} · agent-grid"),
        el("link", rel="stylesheet", href=chrome.css_href),
        el("script", src=chrome.js_href, defer=True),
    )
    return Html(f"<!doctype html>{el('html', head, body, lang='en')}")


def login_page(chrome: Chrome, *, next_path: str, error: str | None) -> Html:
    """The login form: the API token, posted to ``/dashboard/login``; nothing else is shown before it."""
    form = el(
        "form",
        el("h1", "Sign in"),
        el("p", "The coordinator's API token (", el("code", "COORDINATOR_API__TOKEN"), ")."),
        el("p", error, class_="error") if error else None,
        el(
            "label", "Token", el("input", type="password", name="token", autocomplete="current-password", required=True)
        ),
        el("input", type="hidden", name="next", value=next_path),
        el("button", "Sign in", type="submit"),
        method="post",
        action="/dashboard/login",
        class_="login",
    )
    return page("Sign in", chrome, form)


def overview_page(chrome: Chrome, *, runs: Html, queues: Html, policy: Policy, paused: bool) -> Html:
    """Runs, controls, queues and the rules in force."""
    return page(
        "Runs",
        chrome,
        controls_section(paused),
        el(
            "section",
            el("h2", "Runs"),
            el("div", runs, data_fragment="/dashboard/fragments/runs", data_refresh_on="run", data_refresh_active="10"),
            id="runs",
        ),
        el(
            "div",
            el(
                "section",
                el("h2", "Queues"),
                el("div", queues, data_fragment="/dashboard/fragments/queues", data_refresh_every="5"),
                id="queues",
            ),
            policy_section(policy),
            class_="columns",
        ),
    )


def controls_section(paused: bool) -> Html:
    """Pause and resume launches; which button shows follows the page's live paused state."""
    return el(
        "section",
        el("p", "Launches are ", el("strong", "paused" if paused else "active", data_paused_text=True), "."),
        el("button", "Pause launches", type="button", class_="when-active", data_action="/api/pause"),
        el("button", "Resume launches", type="button", class_="when-paused", data_action="/api/resume"),
        id="controls",
        class_="controls",
    )


def runs_table(runs: Sequence[RunRecord], now: datetime) -> Html:
    """The runs, newest first; each row links to its run and its tree."""
    if not runs:
        return el("p", "No runs yet.", class_="empty")
    head = el(
        "thead",
        el(
            "tr",
            *(
                el("th", name)
                for name in ("Run", "Issue", "Tree", "State", "Agent", "Mode", "Duration", "Cost", "Tokens", "Started")
            ),
        ),
    )
    rows = (
        el(
            "tr",
            el("td", el("a", run.run_id[:12], href=run_path(run.run_id), title=run.run_id, class_="mono")),
            el("td", el("a", issue_label(run.issue_key), href=run_path(run.run_id))),
            el("td", _tree_link(run.root_key)),
            el("td", state_badge(run)),
            el("td", run.agent_kind),
            el("td", run.mode),
            duration_cell(run, now),
            el("td", money(run.cost_usd), class_="num"),
            el("td", count(run.tokens), class_="num"),
            el("td", timestamp(run.created_at)),
            data_run_id=run.run_id,
            data_active=str(run.active).lower(),
        )
        for run in runs
    )
    return el("table", head, el("tbody", *rows), class_="runs")


def queues_table(depths: Mapping[str, QueueDepth] | None) -> Html:
    """Messages waiting, in flight and delayed on each queue and dead-letter queue; None: the broker did not answer."""
    if depths is None:
        return el("p", "The broker did not answer.", class_="error")
    head = el("thead", el("tr", *(el("th", name) for name in ("Queue", "Visible", "In flight", "Delayed"))))
    rows = (
        el(
            "tr",
            el("td", name),
            el("td", count(depth.visible), class_="num"),
            el("td", count(depth.in_flight), class_="num"),
            el("td", count(depth.delayed), class_="num"),
            class_="alert" if name.endswith("-dlq") and depth.visible else None,
            data_queue=name,
        )
        for name, depth in depths.items()
    )
    return el("table", head, el("tbody", *rows), class_="queues")


def policy_section(policy: Policy) -> Html:
    """Every cap and budget in force, and the other rules."""
    caps = policy.caps.model_dump()
    cap_rows = (
        el("tr", el("th", _CAP_LABELS.get(name, name)), el("td", _cap_value(name, value)))
        for name, value in caps.items()
    )
    rules = {
        "Opt-in label": policy.opt_in.label,
        "Opted-in repositories": ", ".join(sorted(policy.opt_in.repos)) or "none",
        "Trusted associations": ", ".join(sorted(a.value for a in policy.trust.trusted_associations)) or "none",
        "Allow-list": ", ".join(sorted(policy.trust.allow_list)) or "none",
        "Bot login": policy.bot_login,
        "Agent kind": policy.agent_kind,
        "Kill label": policy.kill_label,
        "Needs-human label": policy.needs_human_label,
        "Parents resumed every": f"{policy.management.resume_interval_s:g} s",
        "Parents resumed at most every": f"{policy.management.min_interval_s:g} s",
    }
    rule_rows = (el("tr", el("th", name), el("td", value)) for name, value in rules.items())
    return el(
        "section",
        el("h2", "Caps and budgets"),
        el("table", el("tbody", *cap_rows), class_="policy"),
        el("h3", "Rules"),
        el("table", el("tbody", *rule_rows), class_="policy"),
        id="policy",
    )


def run_page(chrome: Chrome, run_id: str, details: Html, *, log_url: str) -> Html:
    """One run: its record and transitions (refreshed on its events) and the tail of its log."""
    return page(
        f"Run {run_id[:12]}",
        chrome,
        el("h1", "Run ", el("span", run_id, class_="mono")),
        el(
            "section",
            details,
            data_fragment=f"/dashboard/fragments/runs/{quote(run_id)}",
            data_refresh_on="run",
            data_run=run_id,
        ),
        el(
            "section",
            el("h2", "Log"),
            el("p", "Loading…", class_="log-status", data_log_status=True),
            el("pre", class_="log", data_log=log_url),
            id="log",
        ),
    )


def run_details(run: RunRecord, events: Sequence[RunEvent], now: datetime) -> Html:
    """A run's record and its transitions, oldest first."""
    facts: dict[str, Html | str] = {
        "State": state_badge(run),
        "Issue": issue_label(run.issue_key),
        "Tree": _tree_link(run.root_key),
        "Agent": run.agent_kind,
        "Mode": run.mode,
        "Authorised by": run.authorised_by,
        "Launched": timestamp(run.created_at),
        "Last heard of": timestamp(run.last_seen_at),
        "Ended": timestamp(run.ended_at) if run.ended_at else "—",
        "Duration": el("span", _duration_text(run, now), **_duration_attributes(run)),
        "Cost": money(run.cost_usd),
        "Tokens": count(run.tokens),
        "Sub-issues created": count(run.sub_issues_created),
    }
    event_rows = (
        el("tr", el("td", timestamp(event.at)), el("td", event.kind, class_="mono"), el("td", event.detail))
        for event in events
    )
    return fragment(
        el(
            "dl",
            *(fragment(el("dt", name), el("dd", value)) for name, value in facts.items()),
            class_="facts",
            data_run_active=str(run.active).lower(),
        ),
        el("h2", "Events"),
        el(
            "table",
            el("thead", el("tr", el("th", "At"), el("th", "Kind"), el("th", "Detail"))),
            el("tbody", *event_rows),
            class_="events",
        ),
    )


def tree_page(chrome: Chrome, root_key: str, details: Html, *, actions_path: str) -> Html:
    """One issue tree: its roll-up against the budget, its issues' states, and its kill switch."""
    return page(
        f"Tree {issue_label(root_key)}",
        chrome,
        el("h1", "Tree ", issue_label(root_key)),
        el(
            "section",
            el(
                "button",
                "Kill tree",
                type="button",
                class_="danger",
                data_action=f"{actions_path}/kill",
                data_confirm=f"Stop every run of {issue_label(root_key)} and launch no more?",
                data_refresh="tree",
            ),
            el("button", "Revive tree", type="button", data_action=f"{actions_path}/revive", data_refresh="tree"),
            class_="controls",
        ),
        el(
            "section",
            details,
            id="tree",
            data_fragment=f"/dashboard/fragments/trees{actions_path.removeprefix('/api/trees')}",
            data_refresh_on="run",
            data_root=root_key,
        ),
    )


def tree_details(totals: TreeTotals | None, runs: Sequence[RunRecord], caps: Caps) -> Html:
    """The roll-up (spend of finished runs plus what active ones reported) and one row per issue that ran."""
    if totals is None:
        return el("p", "No run ever happened in this tree.", class_="empty")
    rollup = el(
        "table",
        el(
            "tbody",
            el(
                "tr",
                el("th", "Kill switch"),
                el(
                    "td",
                    el("span", "killed", class_="badge bad") if totals.killed else "off",
                    data_killed=str(totals.killed).lower(),
                ),
            ),
            el("tr", el("th", "Authorised by"), el("td", totals.authorised_by or "—")),
            _budget_row("Runs", totals.runs, caps.max_runs_per_tree, count(totals.runs), count(caps.max_runs_per_tree)),
            _budget_row(
                "Active runs",
                totals.active_runs,
                caps.max_active_runs_per_tree,
                count(totals.active_runs),
                count(caps.max_active_runs_per_tree),
            ),
            _budget_row(
                "Cost",
                totals.cost_usd,
                caps.max_cost_usd_per_tree,
                money(totals.cost_usd),
                money(caps.max_cost_usd_per_tree),
            ),
            _budget_row(
                "Tokens", totals.tokens, caps.max_tokens_per_tree, count(totals.tokens), count(caps.max_tokens_per_tree)
            ),
        ),
        class_="rollup",
    )
    return fragment(el("h2", "Budget"), rollup, el("h2", "Issues"), _nodes_table(totals.root_key, runs))


def _nodes_table(root_key: str, runs: Sequence[RunRecord]) -> Html:
    latest: dict[str, RunRecord] = {}
    totals: dict[str, list[float]] = {}
    for run in runs:  # newest first: the first seen of an issue is its latest run
        latest.setdefault(run.issue_key, run)
        spent = totals.setdefault(run.issue_key, [0, 0.0, 0])
        spent[0] += 1
        spent[1] += run.cost_usd
        spent[2] += run.tokens
    order = sorted(latest, key=lambda key: (key != root_key, _issue_number(key)))
    head = el(
        "thead", el("tr", *(el("th", name) for name in ("Issue", "State", "Runs", "Cost", "Tokens", "Latest run")))
    )
    rows = (
        el(
            "tr",
            el("td", issue_label(key), " ", el("span", "root", class_="badge") if key == root_key else None),
            el("td", state_badge(latest[key])),
            el("td", count(int(totals[key][0])), class_="num"),
            el("td", money(totals[key][1]), class_="num"),
            el("td", count(int(totals[key][2])), class_="num"),
            el("td", el("a", latest[key].run_id[:12], href=run_path(latest[key].run_id), class_="mono")),
            data_issue=key,
        )
        for key in order
    )
    return el("table", head, el("tbody", *rows), class_="nodes")


def _budget_row(name: str, value: float, cap: float, value_text: str, cap_text: str) -> Html:
    meter = el("meter", min="0", max=f"{cap:g}", value=f"{value:g}", high=f"{cap * 0.8:g}", optimum="0")
    return el("tr", el("th", name), el("td", value_text, " of ", cap_text, " ", meter), data_budget=name.lower())


def state_badge(run: RunRecord) -> Html:
    """The run's state, and for an ended run how it ended, coloured by outcome."""
    if run.active:
        return el("span", run.state, class_="badge active", data_state=run.state)
    reason = run.exit_reason or "unknown"
    tone = "ok" if reason in _GOOD_EXITS else "quiet" if reason in _QUIET_EXITS else "bad"
    return el("span", f"{run.state} · {reason}", class_=f"badge {tone}", data_state=run.state)


def duration_cell(run: RunRecord, now: datetime) -> Html:
    """The run's duration, ticking in the browser while it runs."""
    return el("td", _duration_text(run, now), class_="num", **_duration_attributes(run))


def _duration_attributes(run: RunRecord) -> dict[str, str | None]:
    return {"data_since": run.created_at.isoformat(), "data_until": run.ended_at.isoformat() if run.ended_at else None}


def _duration_text(run: RunRecord, now: datetime) -> str:
    seconds = int(((run.ended_at or now) - run.created_at).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def timestamp(at: datetime) -> Html:
    """A UTC time of day, with the full instant in its title and ``datetime``."""
    at = at.astimezone(UTC)
    return el("time", at.strftime("%Y-%m-%d %H:%M:%S"), datetime=at.isoformat(), title=at.isoformat())


def money(value: float) -> str:
    """US dollars to the cent."""
    return f"${value:,.2f}"


def count(value: int) -> str:
    """An integer with thousands separators."""
    return f"{value:,}"


def issue_label(key: str) -> str:
    """``owner/repo#n`` from a ledger key (``github:owner/repo#n``)."""
    return key.partition(":")[2] or key


def run_path(run_id: str) -> str:
    """The dashboard page of a run."""
    return f"/dashboard/runs/{quote(run_id)}"


def tree_path(root_key: str) -> str | None:
    """The dashboard page of the tree rooted at ``root_key``, or None if the key is not ``tracker:owner/repo#n``."""
    repo, _, number = issue_label(root_key).rpartition("#")
    owner, _, name = repo.partition("/")
    if not (owner and name and number.isdigit()):
        return None
    return f"/dashboard/trees/{quote(owner)}/{quote(name)}/{number}"


def _tree_link(root_key: str) -> Html:
    path = tree_path(root_key)
    return el("a", issue_label(root_key), href=path) if path else el("span", issue_label(root_key))


def _issue_number(key: str) -> int:
    number = key.rpartition("#")[2]
    return int(number) if number.isdigit() else 0


def _cap_value(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{kind}: {cap}" for kind, cap in sorted(value.items())) or "none"
    if "cost_usd" in name:
        return money(float(value))
    return count(int(value))

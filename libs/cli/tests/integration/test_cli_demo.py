"""The demo that `make run` plays, end to end and headless: every service a real process, the demo agent
acting through the agent tools, the dashboard watched in headless Chromium while it happens, and the final
state read back from the GitHub stand-in and the ledger.

alice opens an epic of three ordered steps (the second and third each blocked by the one before) and an issue
whose agent runs away. The epic must be planned into sub-issues, the children worked one after the other,
the epic closed by a management run; the runaway stopped at its token budget and handed to a person.
Screenshots of the dashboard are left in ``.local/artifacts/`` (``demo-*.png``).
"""

import itertools
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_grid_runtime.public_testing import CHROMIUM, CHROMIUM_ARGS
from playwright.sync_api import Page, expect, sync_playwright

from .local_grid_harness import ALICE, API, REPO_ROOT, LocalGrid, healthy, running_local_grid

pytestmark = [pytest.mark.connected, pytest.mark.slow]

EPIC, RUNAWAY = 1, 2
TOKEN_CAP = 250_000  # make run's COORDINATOR_POLICY__CAPS__MAX_TOKENS_PER_RUN
ARTIFACTS = REPO_ROOT / ".local" / "artifacts"


def _issue(grid: LocalGrid, number: int) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(
        f"{grid.github}/repos/demo/widgets/issues/{number}", headers=ALICE, timeout=5
    ).json()
    return found


def _get(grid: LocalGrid, path: str) -> Any:
    return httpx.get(f"{grid.github}{path}", headers=ALICE, timeout=5).json()


def _runs(grid: LocalGrid) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = httpx.get(f"{grid.coordinator}/api/runs?limit=500", headers=API, timeout=5).json()
    return sorted(runs, key=lambda run: run["created_at"])


def _labels(issue: dict[str, Any]) -> set[str]:
    return {label["name"] for label in issue["labels"]}


def test_the_demo_plans_works_in_order_closes_the_epic_and_stops_the_runaway(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs it (Debian's chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_local_grid(tmp_path) as grid, sync_playwright() as playwright:
        started = time.monotonic()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        grid.wait_for(lambda: healthy(grid.ports["COORDINATOR_"]), 90, "the coordinator")
        page.goto(f"{grid.coordinator}/dashboard?token=local-dev-api-token")
        expect(page.locator("#live")).to_have_text("live", timeout=30_000)
        seen_at_load = set(page.locator("#runs tr[data-run-id]").evaluate_all("rows => rows.map(r => r.dataset.runId)"))

        grid.wait_for(lambda: "alice opened demo/widgets#2" in grid.log(), 90, "the demo issues")
        opened = time.monotonic()
        grid.wait_for(lambda: "needs-human" in _labels(_issue(grid, RUNAWAY)), 60, "the runaway's escalation")
        escalated = time.monotonic()
        grid.wait_for(lambda: _issue(grid, EPIC)["state"] == "closed", 120, "the epic to be closed")
        closed = time.monotonic()
        grid.wait_for(lambda: not any(run["state"] in ("launching", "running") for run in _runs(grid)), 30, "quiet")

        epic = _issue(grid, EPIC)
        children = _get(grid, f"/repos/demo/widgets/issues/{EPIC}/sub_issues")
        blocked_by = {
            child["number"]: [
                blocker["number"]
                for blocker in _get(grid, f"/repos/demo/widgets/issues/{child['number']}/dependencies/blocked_by")
            ]
            for child in children
        }
        runs = _runs(grid)
        runaway = _issue(grid, RUNAWAY)
        comments = {number: _get(grid, f"/repos/demo/widgets/issues/{number}/comments") for number in (EPIC, RUNAWAY)}

        # The dashboard followed along without a reload: runs it had not seen appeared and ended there.
        _dashboard_shows_the_demo(page, runs, seen_at_load)
        browser.close()
        assert grid.stop() == 0

    print(
        f"\ndemo: issues opened {opened - started:.1f}s after start; runaway escalated after "
        f"{escalated - opened:.1f}s; epic closed after {closed - opened:.1f}s; {len(runs)} runs"
    )

    # The epic: planned into its three steps, in order, each blocked by the one before, all done.
    assert [child["title"] for child in children] == [
        "Describe a widget",
        "Store the catalogue in a file",
        "List the catalogue on the command line",
    ]
    first, second, third = (child["number"] for child in children)
    assert blocked_by == {first: [], second: [first], third: [second]}
    assert all(child["state"] == "closed" for child in children)
    assert (epic["state"], epic["state_reason"]) == ("closed", "completed")
    assert "agent-grid tree" in epic["body"], "the root carries the tree roll-up"

    by_issue: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_issue.setdefault(int(run["issue"].rpartition("#")[2]), []).append(run)
    # Every run reached exactly one terminal state, and none is left active.
    assert all(run["state"] in ("exited", "lost") and run["exit_reason"] for run in runs)
    epic_runs = by_issue[EPIC]
    assert epic_runs[0]["mode"] == "plan"
    assert epic_runs[0]["sub_issues_created"] == 3
    assert [run["mode"] for run in epic_runs[1:]] == ["manage"] * (len(epic_runs) - 1)
    assert epic_runs[-1]["exit_reason"] == "success"
    # Each child ran once, and only after the one before it ended: sub-issue order and blocked_by held.
    child_runs = [by_issue[number] for number in (first, second, third)]
    assert all(len(found) == 1 and found[0]["exit_reason"] == "success" for found in child_runs)
    for before, after in itertools.pairwise(child_runs):
        assert before[0]["ended_at"] <= after[0]["created_at"]
    # Everything ran on alice's word: she opened the epic; the agent's sub-issues inherit her trust.
    assert {run["authorised_by"] for run in runs} == {"alice"}

    # The runaway: stopped at its budget, held for a person, never retried.
    [runaway_run] = by_issue[RUNAWAY]
    assert runaway_run["exit_reason"] == "budget_exhausted"
    assert runaway_run["tokens"] > TOKEN_CAP
    assert runaway["state"] == "open"
    assert "needs-human" in _labels(runaway)

    # State lives in GitHub: one sticky status comment per issue, updated in place.
    for number, found in comments.items():
        statuses = [comment for comment in found if "**agent-grid** ·" in comment["body"]]
        assert len(statuses) == 1, (number, [comment["body"][:80] for comment in found])
    assert "budget_exhausted" in next(c["body"] for c in comments[RUNAWAY] if "**agent-grid** ·" in c["body"])


def _dashboard_shows_the_demo(page: Page, runs: list[dict[str, Any]], seen_at_load: set[str]) -> None:
    appeared = [run for run in runs if run["run_id"] not in seen_at_load]
    assert appeared, "the page was loaded before the demo's runs began"
    for run in appeared:
        badge = page.locator(f"#runs tr[data-run-id='{run['run_id']}'] .badge")
        expect(badge).to_have_text(f"exited · {run['exit_reason']}", timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "demo-runs.png"), full_page=True)
    page.goto(page.url.split("/dashboard")[0] + f"/dashboard/trees/demo/widgets/{EPIC}")
    expect(page.locator("h1")).to_contain_text(f"demo/widgets#{EPIC}")
    expect(page.locator("table.nodes tr[data-issue]")).to_have_count(4)  # the epic and its three steps
    page.screenshot(path=str(ARTIFACTS / "demo-tree.png"), full_page=True)
    print(f"\ndemo: dashboard screenshots in {ARTIFACTS / 'demo-runs.png'} and {ARTIFACTS / 'demo-tree.png'}")

"""A ledger rebuilt from GitHub, without I/O: the records agent-grid hides in its writing, read back; what a
decision adopts from them (properties over arbitrary ledgers and records); who applied the opt-in label."""

import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_launches import RunMode
from agent_grid_tracker.public_github import GitHubAppSettings, GitHubSettings
from agent_grid_tracker.public_tracker import Comment, Issue, IssueState, IssueView, LabelEvent, sticky_marker
from coordinator.decisions.public_facts import LedgerFacts
from coordinator.decisions.public_policy import Caps
from coordinator.decisions.public_rebuild import AdoptedRun, GitHubRecord, IssueRecord, TreeRecord, rebuild
from coordinator.decisions.public_verdicts import Launch
from coordinator.handling import status
from coordinator.handling.facts import github_record, opt_in_labeller
from coordinator.handling.public_records import (
    RecordKey,
    RecordsSettings,
    inert,
    issue_record,
    read_issue_record,
    read_tree_record,
    tree_record,
)
from coordinator.ledger.public_ledger import TreeTotals
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BOT = "agent-grid[bot]"
TREE = TreeRecord(runs=3, cost_usd=4.5, tokens=9000, authorised_by="alice", killed=False)
RECORD = IssueRecord(
    runs=2,
    consecutive_failures=1,
    tree=TREE,
    running_run="run-abc",
    mode="work",
    agent_kind="claude_code",
    authorised_by="alice",
)
LAUNCH = Launch(mode=RunMode.WORK, agent_kind="claude_code", authorised_by="alice", max_cost_usd=5, max_tokens=10)


def configured_key(settings: RecordsSettings, github: GitHubSettings | None = None) -> RecordKey:
    key = RecordKey.configured(settings, github)
    assert key is not None
    return key


KEY = configured_key(RecordsSettings(secret=SecretStr("records-secret-0123456789")))
OTHER_KEY = RecordKey.ephemeral()
ISSUE_KEY = "github:octo/widgets#1"
SEALED = issue_record(RECORD, issue_key=ISSUE_KEY, key=KEY)


def read(text: str, *, issue_key: str = ISSUE_KEY, key: RecordKey = KEY) -> IssueRecord | None:
    return read_issue_record(text, issue_key=issue_key, key=key, recorded_at=NOW)


def test_a_status_comment_carries_its_record_hidden_and_signed_and_reads_back() -> None:
    text = status.launched(LAUNCH, "run-abc", NOW, record=SEALED)
    assert text.splitlines()[0].startswith("**agent-grid** · 🟡 **running**")  # the human text is unchanged
    assert "<!-- agent-grid:record {" in text.splitlines()[-1]
    assert " sig:" in text.splitlines()[-1]
    assert read(text) == replace(RECORD, recorded_at=NOW)


def test_only_a_record_signed_with_the_coordinators_key_for_that_issue_is_read() -> None:
    text = status.launched(LAUNCH, "run-abc", NOW, record=SEALED)
    assert read(text, key=OTHER_KEY) is None  # another key (another coordinator's, a rotated credential's)
    assert read(text, issue_key="github:octo/widgets#2") is None  # copied to another issue
    assert read(text.replace('"runs":2', '"runs":0')) is None  # edited
    signature = text.rsplit(" sig:", 1)[1].removesuffix(" -->")
    assert read(text.replace(signature, signature[::-1])) is None
    assert read(text.replace(f" sig:{signature}", "")) is None  # unsigned, as records were before they were signed
    unsigned = '<!-- agent-grid:record {"v":1,"runs":0,"run":"run-fake","authorised_by":"admin"} -->'
    assert read(unsigned) is None
    # The tree's record likewise, for its root.
    block = tree_record(TREE, root_key=ISSUE_KEY, key=KEY)
    assert read_tree_record(block, root_key=ISSUE_KEY, key=KEY) == TREE
    assert read_tree_record(block, root_key="github:octo/widgets#2", key=KEY) is None
    assert read_tree_record(block, root_key=ISSUE_KEY, key=OTHER_KEY) is None
    # A record of one kind does not pass for the other.
    assert (
        read_tree_record(SEALED.replace("agent-grid:record", "agent-grid:tree-record"), root_key=ISSUE_KEY, key=KEY)
        is None
    )


def test_the_key_is_the_configured_secret_or_derived_from_the_trackers_credential() -> None:
    token = GitHubSettings(token=SecretStr("ghp_token"))
    app = GitHubSettings(app=GitHubAppSettings(app_id=1, private_key=SecretStr("-----PEM-----\n"), installation_id=2))
    secret = RecordsSettings(secret=SecretStr("records-secret-0123456789"))
    assert RecordKey.configured(RecordsSettings(), None) is None
    assert RecordKey.configured(secret, token) == KEY  # a secret, when set, wins
    from_token, from_app = configured_key(RecordsSettings(), token), configured_key(RecordsSettings(), app)
    assert len({KEY.material, from_token.material, from_app.material}) == 3
    # Derived under agent-grid's own label (README): the key is not the credential itself.
    assert from_token.material == hmac.new(b"ghp_token", b"agent-grid coordinator records v1\0", "sha256").digest()
    assert RecordKey.configured(RecordsSettings(), GitHubSettings(token=SecretStr("ghp_token\n"))) == from_token
    assert "records-secret" not in repr(KEY)
    with pytest.raises(ValidationError):
        RecordsSettings(secret=SecretStr("short"))


def test_text_from_people_or_agents_cannot_pass_for_a_record() -> None:
    forged = issue_record(replace(RECORD, runs=0, running_run="run-fake"), issue_key=ISSUE_KEY, key=KEY)
    # Even a validly signed record (an agent quoting an earlier status, say) is quoted inert in a summary.
    text = status.finished("run-abc", "success", 1.0, 10, NOW, f"done\n{forged}", record=SEALED)
    found = read(text)
    assert found is not None
    assert (found.runs, found.running_run) == (2, "run-abc")
    assert text.count("<!-- agent-grid:record ") == 1  # agent-grid's own; the quoted one is words only
    assert "&lt;!-- agent-grid:record " in text
    # An unterminated record before agent-grid's own cannot swallow it into one match that fails to verify.
    assert read(f"<!-- agent-grid:record {{ sig: oops\n{SEALED}") == replace(RECORD, recorded_at=NOW)
    # Nor can "<" or ">" in a recorded value end or start a record early: they are written escaped.
    angled = issue_record(replace(RECORD, agent_kind="<kind> -->"), issue_key=ISSUE_KEY, key=KEY)
    assert "<" not in angled.removeprefix("<!--")
    assert ">" not in angled.removesuffix("-->")
    assert read(angled) == replace(RECORD, agent_kind="<kind> -->", recorded_at=NOW)
    # A login with a double hyphen would end an HTML comment early; the record escapes it.
    odd = status.launched(
        LAUNCH, "r", NOW, record=issue_record(replace(RECORD, authorised_by="a--b"), issue_key=ISSUE_KEY, key=KEY)
    )
    assert "--" not in odd.rsplit("<!-- agent-grid:record ", 1)[1].removesuffix(" -->")
    read_odd = read(odd)
    assert read_odd is not None
    assert read_odd.authorised_by == "a--b"
    assert read("no record here") is None


def test_inert_text_keeps_its_words_and_loses_every_html_comment() -> None:
    text = "see <!-- agent-grid:status --> and <!-- a note --> and <!--agent-grid:record {} -->"
    assert inert(text) == "see &lt;!-- agent-grid:status --> and &lt;!-- a note --> and &lt;!--agent-grid:record {} -->"
    assert "<!--" not in inert(text)
    assert inert("plain `code` > quote") == "plain `code` > quote"


def test_the_roll_up_carries_the_tree_record_and_inert_titles() -> None:
    root = _view(1, body="", children=(_summary(2, title='<!-- agent-grid:tree-record {"runs":0} -->'),))
    totals = TreeTotals(
        "github:octo/widgets#1", "alice", runs=3, active_runs=1, cost_usd=4.5, tokens=9000, killed=False
    )
    block = status.tree_roll_up(root, totals, Caps(), NOW, key=KEY)
    assert "agent-grid tree" in block.splitlines()[0]
    assert '<!-- agent-grid:tree-record {"runs":0}' not in block  # the title, written inert:
    assert '&lt;!-- agent-grid:tree-record {"runs":0}' in block
    assert read_tree_record(block, root_key=ISSUE_KEY, key=KEY) == TREE


def test_the_record_is_read_from_agent_grids_own_status_comment_and_the_roll_up_block_only() -> None:
    record_text = status.launched(LAUNCH, "run-abc", NOW, record=SEALED)
    marker = sticky_marker(status.STATUS_KEY)
    ours = _comment(f"{marker}\n{record_text}", author=BOT, at=NOW)
    pasted = _comment(f"{marker}\n{record_text}", author="mallory", at=NOW + timedelta(minutes=1))
    block = status.tree_roll_up(
        _view(1, body=""), TreeTotals("k", "alice", 3, 0, 4.5, 9000, killed=False), Caps(), NOW, key=KEY
    )
    start, end = sticky_marker("tree:start"), sticky_marker("tree:end")
    body = f"Please do it.\n\n{start}\n{block}\n{end}\n"
    view = _view(1, body=body, comments=(ours.model_dump(), pasted.model_dump()))
    found = github_record(view, view, bot_login=BOT, key=KEY)
    assert found.tree == TREE
    assert found.issue is not None
    assert (found.issue.running_run, found.issue.recorded_at) == ("run-abc", NOW)
    # Outside the markers (a person's text), a tree record is nobody's.
    stray = github_record(_view(1, body=block), _view(1, body=block), bot_login=BOT, key=KEY)
    assert stray == GitHubRecord()
    # Between them, one nobody signed (typed by whoever may edit the description) is nobody's either.
    typed = '<!-- agent-grid:tree-record {"v":1,"runs":0,"authorised_by":"admin"} -->'
    forged = _view(1, body=f"Please.\n\n{start}\n{typed}\n{end}\n")
    assert github_record(forged, forged, bot_login=BOT, key=KEY) == GitHubRecord()
    # Nor is a signed one copied from another tree's root, or a status comment's copied to another issue.
    elsewhere = _view(2, body=body, comments=(ours.model_dump(),))
    assert github_record(elsewhere, elsewhere, bot_login=BOT, key=KEY) == GitHubRecord()


def test_the_opt_in_labeller_is_the_person_who_last_applied_the_label() -> None:
    events = [
        _label("labeled", "agent-grid", "carol"),
        _label("unlabeled", "agent-grid", "carol"),
        _label("labeled", "Agent-Grid", "alice"),
        _label("labeled", "bug", "mallory"),
    ]
    assert opt_in_labeller(events, "agent-grid", bot_login=BOT) == "alice"
    assert (
        opt_in_labeller([*events, _label("labeled", "agent-grid", BOT, bot=True)], "agent-grid", bot_login=BOT) is None
    )
    assert opt_in_labeller(events[3:], "agent-grid", bot_login=BOT) is None


# --- what a decision adopts ----------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=1000)
money = st.floats(min_value=0, max_value=1000, allow_nan=False)
ledgers = st.builds(
    LedgerFacts,
    runs_on_issue=counts,
    runs_in_tree=counts,
    consecutive_failures=st.integers(min_value=0, max_value=5),
    tree_cost_usd=money,
    tree_tokens=counts,
    tree_killed=st.booleans(),
    tree_known=st.booleans(),
    shown_run_known=st.booleans(),
    active_run_on_issue=st.none() | st.just("run-ledger"),
)
trees = st.builds(TreeRecord, runs=counts, cost_usd=money, tokens=counts, killed=st.booleans())
issues = st.builds(
    IssueRecord,
    runs=counts,
    consecutive_failures=st.integers(min_value=0, max_value=5),
    tree=trees,
    running_run=st.none() | st.just("run-shown"),
    recorded_at=st.just(NOW - timedelta(hours=1)),
)
records = st.builds(GitHubRecord, tree=st.none() | trees, issue=st.none() | issues)


@given(ledger=ledgers, record=records)
def test_a_rebuild_never_lowers_a_figure_and_takes_the_larger_of_github_and_the_ledger(
    ledger: LedgerFacts, record: GitHubRecord
) -> None:
    seen, adoption = rebuild(ledger, record, agent_kind="claude_code")
    shown = [tree for tree in (record.tree, record.issue.tree if record.issue else None) if tree is not None]
    assert seen.runs_in_tree == max([ledger.runs_in_tree, *(tree.runs for tree in shown)])
    assert seen.tree_cost_usd == pytest.approx(max([ledger.tree_cost_usd, *(tree.cost_usd for tree in shown)]))
    assert seen.tree_tokens == max([ledger.tree_tokens, *(tree.tokens for tree in shown)])
    assert seen.runs_on_issue == max(ledger.runs_on_issue, record.issue.runs if record.issue else 0)
    assert seen.consecutive_failures >= ledger.consecutive_failures
    assert seen.tree_killed >= ledger.tree_killed
    if ledger.tree_known:  # what a person may lower is taken from GitHub only by a ledger that knows nothing
        assert (seen.consecutive_failures, seen.tree_killed) == (ledger.consecutive_failures, ledger.tree_killed)
    if adoption is None:
        assert seen == ledger
    else:  # the ledger raises its figures to what the decision saw, never adds (adopting twice changes nothing)
        assert seen.runs_in_tree == max(ledger.runs_in_tree, adoption.tree_runs_at_least)
        assert seen.tree_cost_usd == max(ledger.tree_cost_usd, adoption.tree_cost_usd_at_least)
        assert seen.tree_tokens == max(ledger.tree_tokens, adoption.tree_tokens_at_least)
        assert seen.runs_on_issue == max(ledger.runs_on_issue, adoption.issue_runs_at_least)
        assert seen.consecutive_failures == max(ledger.consecutive_failures, adoption.issue_failures_at_least)
        # A decision reading the ledger as this adoption left it adopts nothing more.
        assert rebuild(replace(seen, shown_run_known=True), record, agent_kind="claude_code") == (
            replace(seen, shown_run_known=True),
            None,
        )


@given(ledger=ledgers, record=records)
def test_a_run_shown_running_is_taken_on_only_when_the_ledger_knows_nothing_of_it(
    ledger: LedgerFacts, record: GitHubRecord
) -> None:
    seen, adoption = rebuild(ledger, record, agent_kind="claude_code")
    shown = record.issue.running_run if record.issue else None
    unknown = shown is not None and not ledger.shown_run_known and ledger.active_run_on_issue is None
    assert (adoption is not None and adoption.run is not None) == unknown
    if unknown:
        assert seen.active_run_on_issue == shown  # the issue waits for it: never two runs on one issue
        assert seen.active_total == ledger.active_total + 1
    else:
        assert seen.active_run_on_issue == ledger.active_run_on_issue


def test_a_fresh_ledger_adopts_a_trees_spend_its_failures_and_the_run_in_flight() -> None:
    seen, adoption = rebuild(
        LedgerFacts(), GitHubRecord(tree=TREE, issue=replace(RECORD, recorded_at=NOW)), agent_kind="claude_code"
    )
    assert (seen.runs_in_tree, seen.tree_cost_usd, seen.runs_on_issue, seen.consecutive_failures) == (3, 4.5, 2, 1)
    assert adoption is not None
    assert adoption.run == AdoptedRun("run-abc", "work", "claude_code", "alice", NOW)


def _issue(number: int, *, title: str = "Task", body: str = "") -> Issue:
    return Issue(
        ref=IssueRef(repo="octo/widgets", number=number),
        id=1000 + number,
        title=title,
        state=IssueState.OPEN,
        url=f"https://github.com/octo/widgets/issues/{number}",
        updated_at=NOW,
        body=body,
        author="alice",
        created_at=NOW,
    )


def _summary(number: int, *, title: str) -> dict[str, object]:
    issue = _issue(number, title=title).model_dump()
    return {key: issue[key] for key in ("ref", "id", "title", "state", "url", "updated_at")}


def _view(number: int, *, body: str, children: tuple[object, ...] = (), comments: tuple[object, ...] = ()) -> IssueView:
    return IssueView.model_validate(
        {"issue": _issue(number, body=body).model_dump(), "children": children, "comments": comments}
    )


def _comment(body: str, *, author: str, at: datetime) -> Comment:
    return Comment(id=7, author=author, body=body, created_at=at, updated_at=at, url="https://github.com/c/7")


def _label(action: str, label: str, actor: str, *, bot: bool = False) -> LabelEvent:
    return LabelEvent.model_validate(
        {"action": action, "label": label, "actor": actor, "actor_is_bot": bot, "created_at": NOW}
    )

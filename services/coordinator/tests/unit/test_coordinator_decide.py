"""The launch decision, without I/O: examples for each rule, and properties over arbitrary facts."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agent_grid_contracts.public_issues import Actor, ActorKind, AuthorAssociation, IssueRef
from agent_grid_contracts.public_launches import RunMode
from agent_grid_contracts.public_nudges import NudgeReason
from coordinator.decisions.public_decide import decide_launch
from coordinator.decisions.public_facts import AuthoriserCandidate, ChildFacts, IssueFacts, LedgerFacts, Trigger
from coordinator.decisions.public_policy import Caps, Policy
from coordinator.decisions.public_verdicts import Ignore, Launch, Refuse, Wait, WaitReason
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = Policy()
ROOT = IssueRef(repo="octo/widgets", number=1)
ISSUE = IssueRef(repo="octo/widgets", number=7)
ALICE = Actor(login="alice", association=AuthorAssociation.MEMBER)
MALLORY = Actor(login="mallory", association=AuthorAssociation.NONE)
AGENT = Actor(login="agent-grid[bot]", kind=ActorKind.AGENT, run_id="run-1")

OPTED_IN = IssueFacts(
    ref=ISSUE, open=True, labels=frozenset({"agent-grid"}), assignees=(), root=ISSUE, root_labels=frozenset()
)
IDLE = LedgerFacts()
BY_ALICE = Trigger(NudgeReason.ISSUE_LABELED, ALICE)


def decide(
    issue: IssueFacts = OPTED_IN, ledger: LedgerFacts = IDLE, trigger: Trigger = BY_ALICE, policy: Policy = POLICY
) -> object:
    return decide_launch(issue, ledger, trigger, policy, NOW)


def test_a_trusted_label_on_a_leaf_launches_a_plan_run_with_the_run_caps() -> None:
    verdict = decide()
    assert verdict == Launch(
        mode=RunMode.PLAN,
        agent_kind="claude_code",
        authorised_by="alice",
        max_cost_usd=POLICY.caps.max_cost_usd_per_run,
        max_tokens=POLICY.caps.max_tokens_per_run,
    )


def test_a_leaf_that_ran_before_works_and_a_parent_is_managed() -> None:
    assert isinstance(verdict := decide(ledger=LedgerFacts(runs_on_issue=1)), Launch)
    assert verdict.mode is RunMode.WORK
    parent = replace(OPTED_IN, children=(ChildFacts(IssueRef(repo="octo/widgets", number=8), open=True),))
    assert isinstance(verdict := decide(issue=parent), Launch)
    assert verdict.mode is RunMode.MANAGE


@pytest.mark.parametrize(
    ("issue", "reason"),
    [
        (replace(OPTED_IN, open=False), "closed"),
        (replace(OPTED_IN, labels=frozenset()), "not opted in"),
        (replace(OPTED_IN, assignees=("bob",)), "a human's issue"),
        (replace(OPTED_IN, assignees=("agent-grid[bot]", "bob")), "a human's issue"),
        (replace(OPTED_IN, labels=frozenset({"agent-grid", "needs-human"})), "held for a person"),
    ],
)
def test_issues_that_are_not_ours_are_ignored(issue: IssueFacts, reason: str) -> None:
    verdict = decide(issue=issue)
    assert isinstance(verdict, Ignore)
    assert reason in verdict.reason


def test_opt_in_by_root_label_bot_assignment_or_repository() -> None:
    bare = replace(OPTED_IN, labels=frozenset())
    assert isinstance(decide(issue=replace(bare, root_labels=frozenset({"agent-grid"}))), Launch)
    assert isinstance(decide(issue=replace(bare, assignees=("agent-grid[bot]",))), Launch)
    repo_wide = Policy(opt_in=POLICY.opt_in.model_copy(update={"repos": frozenset({"octo/widgets"})}))
    assert isinstance(decide(issue=bare, policy=repo_wide), Launch)


def test_untrusted_text_never_starts_a_run_but_the_allow_list_does() -> None:
    assert isinstance(decide(trigger=Trigger(NudgeReason.COMMENT_MENTION, MALLORY)), Ignore)
    allowed = Policy(trust=POLICY.trust.model_copy(update={"allow_list": frozenset({"mallory"})}))
    assert isinstance(decide(trigger=Trigger(NudgeReason.COMMENT_MENTION, MALLORY), policy=allowed), Launch)


def test_agent_made_work_runs_on_the_trees_authorisation_and_never_creates_one() -> None:
    by_agent = Trigger(NudgeReason.AGENT_REQUEST, AGENT)
    assert isinstance(decide(trigger=by_agent), Ignore)
    verdict = decide(trigger=by_agent, ledger=LedgerFacts(tree_authorised_by="alice"))
    assert isinstance(verdict, Launch)
    assert verdict.authorised_by == "alice"
    system = Trigger(NudgeReason.MANAGEMENT_DUE, None)
    assert isinstance(decide(trigger=system, ledger=LedgerFacts(tree_authorised_by="alice")), Launch)
    # Somebody else's bot is no authority, even on an authorised tree.
    other_bot = Trigger(NudgeReason.ISSUE_LABELED, Actor(login="ci[bot]", kind=ActorKind.BOT))
    assert isinstance(decide(trigger=other_bot, ledger=LedgerFacts(tree_authorised_by="alice")), Ignore)


def test_a_poll_in_a_tree_without_an_authoriser_asks_who_vouched_for_it_on_github() -> None:
    polled = Trigger(NudgeReason.POLLED_UPDATE, None)
    asked = decide(trigger=polled)
    assert isinstance(asked, Ignore)
    assert asked.needs_authoriser  # the adapter may look (once) and decide again
    # A person's untrusted word is no reason to look: it never starts a run.
    assert not decide(trigger=Trigger(NudgeReason.COMMENT_MENTION, MALLORY)).needs_authoriser  # type: ignore[attr-defined]
    # Looked, found no one: ignored for good, without asking again.
    nobody = decide(issue=replace(OPTED_IN, authoriser_candidates=()), trigger=polled)
    assert isinstance(nobody, Ignore)
    assert not nobody.needs_authoriser


@pytest.mark.parametrize(
    ("candidates", "policy", "authorised_by"),
    [
        ((AuthoriserCandidate("alice", "write", "label"),), POLICY, "alice"),
        ((AuthoriserCandidate("alice", "admin", "label"),), POLICY, "alice"),
        ((AuthoriserCandidate("carol", "triage", "label"),), POLICY, None),  # may label, not trusted
        (
            (AuthoriserCandidate("carol", "read", "label"), AuthoriserCandidate("alice", "maintain", "record")),
            POLICY,
            "alice",
        ),
        ((AuthoriserCandidate("agent-grid[bot]", "write", "label"),), POLICY, None),  # never itself
        (
            (AuthoriserCandidate("carol", "read", "label"),),
            Policy(trust=POLICY.trust.model_copy(update={"allow_list": frozenset({"carol"})})),
            "carol",
        ),
        (
            (AuthoriserCandidate("alice", "write", "label"),),
            Policy(trust=POLICY.trust.model_copy(update={"trusted_permissions": frozenset({"admin"})})),
            None,
        ),
    ],
)
def test_an_agent_grid_trigger_runs_for_the_first_trusted_person_who_vouched_on_github(
    candidates: tuple[AuthoriserCandidate, ...], policy: Policy, authorised_by: str | None
) -> None:
    issue = replace(OPTED_IN, authoriser_candidates=candidates)
    verdict = decide(issue=issue, trigger=Trigger(NudgeReason.POLLED_UPDATE, None), policy=policy)
    assert (verdict.authorised_by if isinstance(verdict, Launch) else None) == authorised_by
    # The ledger's own authoriser, once there is one, always comes first.
    recorded = decide(
        issue=issue, trigger=Trigger(NudgeReason.POLLED_UPDATE, None), ledger=LedgerFacts(tree_authorised_by="bob")
    )
    assert isinstance(recorded, Launch)
    assert recorded.authorised_by == "bob"


@pytest.mark.parametrize(
    ("issue", "ledger", "reason"),
    [
        (OPTED_IN, LedgerFacts(paused=True), WaitReason.PAUSED),
        (OPTED_IN, LedgerFacts(active_run_on_issue="run-9"), WaitReason.RUN_IN_FLIGHT),
        (replace(OPTED_IN, open_blockers=(ROOT,)), IDLE, WaitReason.BLOCKED),
        (replace(OPTED_IN, earlier_open_siblings=(ROOT,)), IDLE, WaitReason.EARLIER_SIBLING_OPEN),
        (OPTED_IN, LedgerFacts(active_total=4), WaitReason.CONCURRENCY),
        (OPTED_IN, LedgerFacts(active_in_repo=2), WaitReason.CONCURRENCY),
        (OPTED_IN, LedgerFacts(active_in_tree=2), WaitReason.CONCURRENCY),
        (OPTED_IN, LedgerFacts(repo_cost_today_usd=50.0), WaitReason.REPO_DAILY_BUDGET),
    ],
)
def test_waits(issue: IssueFacts, ledger: LedgerFacts, reason: WaitReason) -> None:
    verdict = decide(issue=issue, ledger=ledger)
    assert isinstance(verdict, Wait)
    assert verdict.reason is reason


def test_the_repo_budget_wait_ends_at_the_next_utc_midnight() -> None:
    verdict = decide(ledger=LedgerFacts(repo_cost_today_usd=99.0))
    assert isinstance(verdict, Wait)
    assert verdict.not_before == datetime(2026, 11, 26, tzinfo=UTC)


def test_a_parent_is_never_resumed_twice_within_the_minimum_interval() -> None:
    parent = replace(OPTED_IN, children=(ChildFacts(ROOT, open=True),))
    recently = LedgerFacts(last_manage_started_at=NOW - timedelta(seconds=30))
    verdict = decide(issue=parent, ledger=recently)
    assert isinstance(verdict, Wait)
    assert verdict.not_before == NOW + timedelta(seconds=90)
    assert isinstance(decide(issue=parent, ledger=LedgerFacts(last_manage_started_at=NOW - timedelta(hours=1))), Launch)


def test_an_agent_kind_cap_applies_only_to_that_kind() -> None:
    capped = Policy(caps=Caps(max_active_runs_per_agent_kind={"claude_code": 1}))
    assert isinstance(decide(ledger=LedgerFacts(active_of_kind=1), policy=capped), Wait)
    assert isinstance(decide(ledger=LedgerFacts(active_of_kind=1)), Launch)


@pytest.mark.parametrize(
    ("issue", "ledger", "cap"),
    [
        (OPTED_IN, LedgerFacts(consecutive_failures=3), "max_consecutive_failures"),
        (OPTED_IN, LedgerFacts(runs_on_issue=5), "max_runs_per_issue"),
        (OPTED_IN, LedgerFacts(runs_in_tree=40), "max_runs_per_tree"),
        (OPTED_IN, LedgerFacts(tree_cost_usd=25.0), "max_cost_usd_per_tree"),
        (OPTED_IN, LedgerFacts(tree_tokens=20_000_000), "max_tokens_per_tree"),
        (replace(OPTED_IN, depth=4), IDLE, "max_tree_depth"),
        (replace(OPTED_IN, tree_size=51), IDLE, "max_tree_size"),
    ],
)
def test_caps_only_a_human_can_lift_refuse_and_escalate(issue: IssueFacts, ledger: LedgerFacts, cap: str) -> None:
    verdict = decide(issue=issue, ledger=ledger)
    assert isinstance(verdict, Refuse)
    assert (verdict.cap, verdict.escalate) == (cap, True)


def test_a_person_handing_an_issue_back_closes_its_circuit_breaker_and_nothing_else_does() -> None:
    tripped = LedgerFacts(consecutive_failures=3, tree_authorised_by="alice")
    for trigger in (
        Trigger(NudgeReason.ISSUE_UNLABELED, ALICE, label="needs-human"),  # the escalation label removed
        Trigger(NudgeReason.ISSUE_UNLABELED, ALICE, label="Needs-Human"),  # GitHub's names ignore case
        Trigger(NudgeReason.MANUAL, ALICE),  # or a nudge by hand
    ):
        verdict = decide(ledger=tripped, trigger=trigger)
        assert isinstance(verdict, Launch), trigger
        assert verdict.resets_failures
    for trigger in (
        Trigger(NudgeReason.ISSUE_LABELED, ALICE),  # any other word from a person leaves it tripped
        Trigger(NudgeReason.ISSUE_LABELED, ALICE, label="needs-human"),
        Trigger(NudgeReason.ISSUE_UNLABELED, ALICE, label="bug"),  # another label removed: not a hand-back
        Trigger(NudgeReason.ISSUE_UNLABELED, ALICE),  # a label removed, but which is not said
        Trigger(NudgeReason.RUN_FINISHED, None),
        Trigger(NudgeReason.ISSUE_UNLABELED, AGENT, label="needs-human"),
    ):
        verdict = decide(ledger=tripped, trigger=trigger)
        assert isinstance(verdict, Refuse), trigger
        assert verdict.cap == "max_consecutive_failures"
    untrusted = Trigger(NudgeReason.ISSUE_UNLABELED, MALLORY, label="needs-human")
    assert isinstance(decide(ledger=tripped, trigger=untrusted), Ignore)
    # The policy names the label.
    renamed = Policy(needs_human_label="help-wanted")
    own = decide(ledger=tripped, trigger=replace(untrusted, actor=ALICE, label="help-wanted"), policy=renamed)
    assert isinstance(own, Launch)
    assert own.resets_failures
    assert isinstance(decide(ledger=tripped, trigger=replace(untrusted, actor=ALICE), policy=renamed), Refuse)
    # Nothing to reset: an ordinary launch.
    verdict = decide(trigger=Trigger(NudgeReason.ISSUE_UNLABELED, ALICE, label="needs-human"))
    assert isinstance(verdict, Launch)
    assert not verdict.resets_failures


def test_the_kill_switch_refuses_without_escalating() -> None:
    for issue, ledger in (
        (replace(OPTED_IN, root_labels=frozenset({"agent-grid:stop"})), IDLE),
        (OPTED_IN, LedgerFacts(tree_killed=True)),
    ):
        assert decide(issue=issue, ledger=ledger) == Refuse(
            "kill_switch", "the kill switch is on for this tree", escalate=False
        )


def test_a_run_never_gets_more_than_what_is_left_of_its_tree() -> None:
    verdict = decide(ledger=LedgerFacts(tree_cost_usd=23.5, tree_tokens=19_500_000))
    assert isinstance(verdict, Launch)
    assert verdict.max_cost_usd == pytest.approx(1.5)
    assert verdict.max_tokens == 500_000


def test_what_the_trees_active_runs_were_allotted_is_not_left_for_another_run() -> None:
    # 18 spent, and a run in flight allotted 5 more than it has spent so far: 2 are left.
    busy = LedgerFacts(active_in_tree=1, tree_cost_usd=18.0, tree_reserved_usd=5.0, tree_reserved_tokens=2_000_000)
    verdict = decide(ledger=busy)
    assert isinstance(verdict, Launch)
    assert verdict.max_cost_usd == pytest.approx(2.0)
    assert verdict.max_tokens == 2_000_000  # 18,000,000 of 20,000,000 tokens are still free
    tokens = decide(ledger=replace(busy, tree_cost_usd=0.0, tree_tokens=17_000_000))
    assert isinstance(tokens, Launch)
    assert (tokens.max_cost_usd, tokens.max_tokens) == (5.0, 1_000_000)


@pytest.mark.parametrize(
    "ledger",
    [
        LedgerFacts(active_in_tree=1, tree_cost_usd=20.0, tree_reserved_usd=5.0),
        LedgerFacts(active_in_tree=1, tree_cost_usd=12.0, tree_reserved_usd=13.5),
        LedgerFacts(active_in_tree=1, tree_tokens=10_000_000, tree_reserved_tokens=10_000_000),
    ],
)
def test_a_tree_whose_active_runs_hold_the_rest_of_its_budget_waits_for_one_to_end(ledger: LedgerFacts) -> None:
    verdict = decide(ledger=ledger)
    assert isinstance(verdict, Wait)  # not refused: what the runs do not spend is left when they end
    assert verdict.reason is WaitReason.TREE_BUDGET_ALLOTTED
    assert "allotted" in verdict.detail


# --- properties over arbitrary facts ----------------------------------------------------------------------
# Arbitrary facts rarely add up to a launch, where the rules bite; so each example starts from a launchable
# baseline and replaces a few fields (up to four, any of them) with arbitrary values.

refs = st.builds(IssueRef, repo=st.just("octo/widgets"), number=st.integers(1, 50))
labels = st.frozensets(st.sampled_from(["agent-grid", "agent-grid:stop", "needs-human", "bug"]))
ISSUE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "open": st.booleans(),
    "labels": labels,
    "root_labels": labels,
    "assignees": st.lists(st.sampled_from(["agent-grid[bot]", "bob"]), max_size=2, unique=True).map(tuple),
    "children": st.lists(st.builds(ChildFacts, ref=refs, open=st.booleans()), max_size=3).map(tuple),
    "open_blockers": st.lists(refs, max_size=1).map(tuple),
    "earlier_open_siblings": st.lists(refs, max_size=1).map(tuple),
    "depth": st.integers(0, 6),
    "tree_size": st.integers(1, 80),
}
LEDGER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "active_total": st.integers(0, 6),
    "active_in_repo": st.integers(0, 3),
    "active_in_tree": st.integers(0, 3),
    "active_of_kind": st.integers(0, 3),
    "active_run_on_issue": st.one_of(st.none(), st.just("run-9")),
    "runs_on_issue": st.integers(0, 7),
    "runs_in_tree": st.integers(0, 50),
    "consecutive_failures": st.integers(0, 4),
    "tree_cost_usd": st.floats(0, 30),
    "tree_tokens": st.integers(0, 25_000_000),
    "tree_reserved_usd": st.floats(0, 30),
    "tree_reserved_tokens": st.integers(0, 25_000_000),
    "repo_cost_today_usd": st.floats(0, 60),
    "last_manage_started_at": st.one_of(st.none(), st.just(NOW - timedelta(seconds=60))),
    "tree_authorised_by": st.one_of(st.none(), st.just("alice")),
    "paused": st.booleans(),
    "tree_killed": st.booleans(),
}
actors = st.one_of(
    st.none(),
    st.builds(
        Actor,
        login=st.sampled_from(["alice", "mallory", "agent-grid[bot]", "ci[bot]"]),
        kind=st.sampled_from(list(ActorKind)),
        association=st.sampled_from(list(AuthorAssociation)),
        run_id=st.one_of(st.none(), st.just("run-1")),
    ),
)
FIELDS = [("issue", name) for name in ISSUE_FIELDS] + [("ledger", name) for name in LEDGER_FIELDS]
FIELDS.append(("trigger", "actor"))
FIELDS.append(("trigger", "reason"))
FIELDS.append(("trigger", "label"))
reasons = st.sampled_from([NudgeReason.ISSUE_LABELED, NudgeReason.ISSUE_UNLABELED, NudgeReason.MANUAL])
trigger_labels = st.sampled_from([None, "needs-human", "bug"])


@st.composite
def near_launch(draw: st.DrawFn) -> tuple[IssueFacts, LedgerFacts, Trigger]:
    issue, ledger, trigger = OPTED_IN, IDLE, BY_ALICE
    for where, name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if where == "issue":
            issue = replace(issue, **{name: draw(ISSUE_FIELDS[name])})
        elif where == "ledger":
            ledger = replace(ledger, **{name: draw(LEDGER_FIELDS[name])})
        elif name == "actor":
            trigger = replace(trigger, actor=draw(actors))
        elif name == "label":
            trigger = replace(trigger, label=draw(trigger_labels))
        else:
            trigger = replace(trigger, reason=draw(reasons))
    return issue, ledger, trigger


@settings(max_examples=1000)
@given(facts=near_launch())
def test_a_launch_never_breaks_a_rule_or_a_cap(facts: tuple[IssueFacts, LedgerFacts, Trigger]) -> None:
    issue, ledger, trigger = facts
    verdict = decide_launch(issue, ledger, trigger, POLICY, NOW)
    if not isinstance(verdict, Launch):
        return
    caps = POLICY.caps
    assert issue.open
    assert ledger.active_run_on_issue is None  # one active run per issue
    assert not ledger.paused
    assert not ledger.tree_killed
    assert "agent-grid:stop" not in issue.labels | issue.root_labels
    assert "needs-human" not in issue.labels  # escalated issues wait for a person
    assert not issue.open_blockers
    assert not issue.earlier_open_siblings
    assert all(login == "agent-grid[bot]" for login in issue.assignees)  # never on a human's issue
    assert ledger.active_total < caps.max_active_runs
    assert ledger.active_in_repo < caps.max_active_runs_per_repo
    assert ledger.active_in_tree < caps.max_active_runs_per_tree
    assert ledger.runs_on_issue < caps.max_runs_per_issue
    assert ledger.runs_in_tree < caps.max_runs_per_tree
    # The circuit breaker: only a trusted person's hand-back lets a tripped issue run again.
    # A hand-back is a nudge by hand, or the removal of the escalation label itself (not of any other label).
    unlabelled = trigger.reason is NudgeReason.ISSUE_UNLABELED and trigger.label == POLICY.needs_human_label
    handed_back = (trigger.reason is NudgeReason.MANUAL or unlabelled) and not trigger.is_ours
    assert ledger.consecutive_failures < caps.max_consecutive_failures or (handed_back and verdict.resets_failures)
    assert ledger.tree_cost_usd < caps.max_cost_usd_per_tree
    assert ledger.tree_tokens < caps.max_tokens_per_tree
    assert ledger.repo_cost_today_usd < caps.max_cost_usd_per_repo_per_day
    assert issue.depth <= caps.max_tree_depth
    assert issue.tree_size <= caps.max_tree_size
    assert 0 < verdict.max_cost_usd <= caps.max_cost_usd_per_run
    assert 0 < verdict.max_tokens <= caps.max_tokens_per_run
    # Never more than what is left of the tree once its active runs' allotments are set aside.
    assert verdict.max_cost_usd <= caps.max_cost_usd_per_tree - ledger.tree_cost_usd - ledger.tree_reserved_usd
    assert verdict.max_tokens <= caps.max_tokens_per_tree - ledger.tree_tokens - ledger.tree_reserved_tokens
    assert (verdict.mode is RunMode.MANAGE) == bool(issue.children)
    # Trust: a trusted person said so, or the tree already carries a trusted person's word.
    actor = trigger.actor
    by_person = actor is not None and actor.kind in (ActorKind.HUMAN, ActorKind.UNKNOWN) and not actor.run_id
    if by_person:
        assert actor is not None
        assert verdict.authorised_by == actor.login
        assert actor.association in POLICY.trust.trusted_associations
    else:
        assert verdict.authorised_by == ledger.tree_authorised_by == "alice"


CAPPED_LEDGER_FIELDS = {
    "active_total": ("max_active_runs", Wait),
    "active_in_repo": ("max_active_runs_per_repo", Wait),
    "active_in_tree": ("max_active_runs_per_tree", Wait),
    "repo_cost_today_usd": ("max_cost_usd_per_repo_per_day", Wait),
    "runs_on_issue": ("max_runs_per_issue", Refuse),
    "runs_in_tree": ("max_runs_per_tree", Refuse),
    "consecutive_failures": ("max_consecutive_failures", Refuse),
    "tree_cost_usd": ("max_cost_usd_per_tree", Refuse),
    "tree_tokens": ("max_tokens_per_tree", Refuse),
}


@given(field=st.sampled_from(sorted(CAPPED_LEDGER_FIELDS)), fraction=st.floats(0, 2, allow_nan=False))
def test_every_cap_admits_what_is_below_it_and_stops_what_reaches_it(field: str, fraction: float) -> None:
    cap_name, stop = CAPPED_LEDGER_FIELDS[field]
    cap = getattr(POLICY.caps, cap_name)
    value = type(cap)(cap * fraction)
    verdict = decide(ledger=replace(IDLE, **{field: value}))
    if value < cap:
        assert isinstance(verdict, Launch), (field, value, verdict)
    else:
        assert isinstance(verdict, stop), (field, value, verdict)


@dataclass
class Allotted:
    """A run in flight in the simulated tree: what it was allotted and what it has reported spending."""

    cost_usd: float
    tokens: int
    spent_usd: float = 0.0
    spent_tokens: int = 0


TREE_CAPS = Caps(
    max_active_runs=10,
    max_active_runs_per_repo=10,
    max_active_runs_per_tree=3,
    max_runs_per_issue=100,
    max_runs_per_tree=100,
    max_cost_usd_per_run=5.0,
    max_tokens_per_run=1_000,
    max_cost_usd_per_tree=12.0,
    max_tokens_per_tree=2_500,
)


@settings(max_examples=500)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["launch", "spend", "end"]), st.floats(0, 1), st.integers(0, 5)), max_size=40
    )
)
def test_runs_in_flight_together_never_take_their_tree_past_its_budget(steps: list[tuple[str, float, int]]) -> None:
    """Launches, usage reports and exits interleaved in one tree, each launch decided on the facts of the moment.

    Every run may spend all it was allotted; what the tree has spent and what its runs in flight may still spend
    never exceed its caps, and a tree whose budget is held by its runs in flight waits rather than refusing.
    """
    policy = Policy(caps=TREE_CAPS)
    active: dict[int, Allotted] = {}
    spent_usd, spent_tokens, issues = 0.0, 0, iter(range(2, 1000))
    for action, fraction, pick in steps:
        facts = LedgerFacts(
            active_total=len(active),
            active_in_repo=len(active),
            active_in_tree=len(active),
            tree_cost_usd=spent_usd + sum(run.spent_usd for run in active.values()),
            tree_tokens=spent_tokens + sum(run.spent_tokens for run in active.values()),
            tree_reserved_usd=sum(max(run.cost_usd - run.spent_usd, 0.0) for run in active.values()),
            tree_reserved_tokens=sum(max(run.tokens - run.spent_tokens, 0) for run in active.values()),
            tree_authorised_by="alice",
        )
        chosen = sorted(active)[pick % len(active)] if active else None
        if action == "launch":
            number = next(issues)
            issue = replace(OPTED_IN, ref=IssueRef(repo="octo/widgets", number=number), root=ROOT)
            verdict = decide_launch(issue, facts, BY_ALICE, policy, NOW)
            if isinstance(verdict, Launch):
                active[number] = Allotted(verdict.max_cost_usd, verdict.max_tokens)
            elif isinstance(verdict, Wait):
                assert verdict.reason in (WaitReason.CONCURRENCY, WaitReason.TREE_BUDGET_ALLOTTED), verdict
                assert active, "a tree with no run in flight has nothing to wait for"
            else:
                assert isinstance(verdict, Refuse), verdict
                assert facts.tree_cost_usd >= TREE_CAPS.max_cost_usd_per_tree or (
                    facts.tree_tokens >= TREE_CAPS.max_tokens_per_tree
                ), "refused only when the tree has really spent its budget"
        elif action == "spend" and chosen is not None:
            run = active[chosen]  # usage only grows, up to the run's own limit (the grid stops it there)
            run.spent_usd = max(run.spent_usd, run.cost_usd * fraction)
            run.spent_tokens = max(run.spent_tokens, int(run.tokens * fraction))
        elif action == "end" and chosen is not None:
            run = active.pop(chosen)
            spent_usd += run.spent_usd
            spent_tokens += run.spent_tokens
        committed_usd = spent_usd + sum(max(run.cost_usd, run.spent_usd) for run in active.values())
        committed_tokens = spent_tokens + sum(max(run.tokens, run.spent_tokens) for run in active.values())
        assert committed_usd <= TREE_CAPS.max_cost_usd_per_tree + 1e-9
        assert committed_tokens <= TREE_CAPS.max_tokens_per_tree


@given(facts=near_launch())
def test_the_decision_is_a_function_of_its_inputs(facts: tuple[IssueFacts, LedgerFacts, Trigger]) -> None:
    assert decide_launch(*facts, POLICY, NOW) == decide_launch(*facts, POLICY, NOW)

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from agent_grid_contracts.public_codec import KNOWN_BODIES, ContractError, decode, encode
from agent_grid_contracts.public_controls import CancelRun
from agent_grid_contracts.public_envelope import Envelope, wrap
from agent_grid_contracts.public_issues import Actor, AuthorAssociation, IssueRef, parse_issue_ref
from agent_grid_contracts.public_launches import LaunchAgent, RunLimits, RunMode
from agent_grid_contracts.public_lifecycle import AgentExited, AgentHeartbeat, AgentStarted, ExitReason
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from agent_grid_contracts.public_schemas import message_schemas
from agent_grid_contracts.public_usage import Usage
from pydantic import ValidationError

ISSUE = IssueRef(repo="octo/widgets", number=42, node_id="I_kwDOA")
SCHEMA_DIR = Path(__file__).parents[2] / "schemas"


def sample_bodies() -> list[Nudge | LaunchAgent | AgentStarted | AgentHeartbeat | AgentExited | CancelRun]:
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25, reported=True)
    return [
        Nudge(
            issue=ISSUE,
            reason=NudgeReason.ISSUE_LABELED,
            source=NudgeSource.GITHUB_WEBHOOK,
            actor=Actor(login="alice", association=AuthorAssociation.MEMBER),
            event="issues.labeled",
            label="agent-grid",
        ),
        LaunchAgent(
            run_id="run-1",
            issue=ISSUE,
            mode=RunMode.WORK,
            agent_kind="claude_code",
            limits=RunLimits(wall_clock_s=600, max_cost_usd=2.0),
            prompt_inputs={"title": "Fix it"},
        ),
        AgentStarted(run_id="run-1", issue=ISSUE, worker_id="w1", pid=123, started_at=datetime.now(UTC)),
        AgentHeartbeat(run_id="run-1", issue=ISSUE, worker_id="w1", sequence=3, elapsed_s=12.5, usage=usage),
        AgentExited(
            run_id="run-1",
            issue=ISSUE,
            worker_id="w1",
            reason=ExitReason.SUCCESS,
            exit_code=0,
            duration_s=30.0,
            usage=usage,
            summary="opened PR #7",
        ),
        CancelRun(run_id="run-1", reason="tree killed by alice", grace_s=30),
    ]


@pytest.mark.parametrize("body", sample_bodies(), ids=lambda body: body.KIND)
def test_every_message_round_trips_through_the_wire_format(body: Nudge) -> None:
    envelope = wrap(body, producer="test", dedupe_key="delivery-1")

    decoded = decode(encode(envelope))

    assert decoded == envelope
    assert decoded.body == body
    assert decoded.kind == body.KIND
    assert decoded.dedupe_key == "delivery-1"


def test_every_known_kind_has_a_sample() -> None:
    assert {body.KIND for body in sample_bodies()} == set(KNOWN_BODIES)


def test_messages_are_frozen() -> None:
    nudge = Nudge(issue=ISSUE)
    with pytest.raises(ValidationError, match="frozen"):
        nudge.issue = IssueRef(repo="a/b", number=1)  # type: ignore[misc]


def test_a_caused_message_inherits_correlation_and_names_its_cause() -> None:
    first = wrap(Nudge(issue=ISSUE), producer="test")
    second = wrap(
        LaunchAgent(run_id="r", issue=ISSUE, mode=RunMode.PLAN, agent_kind="generic"), producer="test", cause=first
    )

    assert second.correlation_id == first.correlation_id == str(first.message_id)
    assert second.causation_id == str(first.message_id)
    assert second.message_id != first.message_id


def test_reader_ignores_fields_added_by_a_newer_producer() -> None:
    wire = json.loads(encode(wrap(Nudge(issue=ISSUE), producer="test")))
    wire["priority_hint"] = 7
    wire["body"]["issue"]["labels"] = ["x"]

    decoded = decode(json.dumps(wire))

    assert decoded.body.issue == ISSUE


def test_reader_maps_enum_values_it_does_not_know_to_unknown() -> None:
    wire = json.loads(encode(wrap(Nudge(issue=ISSUE), producer="test")))
    wire["body"]["reason"] = "reason_from_the_future"
    wire["body"]["source"] = "carrier_pigeon"

    body = decode(json.dumps(wire)).body

    assert body.reason is NudgeReason.UNKNOWN
    assert body.source is NudgeSource.UNKNOWN


def test_a_hand_written_minimal_nudge_is_valid_and_gets_defaults() -> None:
    message_id = str(uuid4())
    raw = json.dumps(
        {
            "message_id": message_id,
            "kind": "nudge",
            "body": {"issue": {"repo": "octo/widgets", "number": 42}, "detail": None},
        }
    )

    envelope = decode(raw)

    assert envelope.dedupe_key == message_id
    assert envelope.correlation_id == message_id
    assert envelope.schema_version == 1
    assert envelope.body.reason is NudgeReason.MANUAL
    assert envelope.body.issue.tracker == "github"
    assert envelope.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"message_id": "x"}', "missing 'kind'"),
        ('{"message_id": "6f1c7c1e-5b1a-4c1e-9d1a-0a0a0a0a0a0a", "kind": "teleport", "body": {}}', "unknown"),
        (
            '{"message_id": "6f1c7c1e-5b1a-4c1e-9d1a-0a0a0a0a0a0a", "kind": "nudge", "schema_version": 2, "body": {}}',
            "newer than the supported 1",
        ),
        (
            '{"message_id": "6f1c7c1e-5b1a-4c1e-9d1a-0a0a0a0a0a0a", "kind": "nudge", "body": {"issue": {"repo": "nope",'
            ' "number": 1}}}',
            "owner/name",
        ),
        (
            '{"message_id": "not-a-uuid", "kind": "nudge", "body": {"issue": {"repo": "a/b", "number": 1}}}',
            "message_id",
        ),
    ],
)
def test_invalid_messages_fail_with_a_clear_reason(raw: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(raw)


def test_decode_refuses_kinds_the_reader_does_not_accept() -> None:
    raw = encode(wrap(Nudge(issue=ISSUE), producer="test"))

    with pytest.raises(ContractError, match="unaccepted kind 'nudge'"):
        decode(raw, accept=[LaunchAgent])


def test_envelope_kind_must_match_its_body() -> None:
    with pytest.raises(ValidationError, match="does not match body kind"):
        Envelope[Nudge](message_id=uuid4(), kind="launch_agent", body=Nudge(issue=ISSUE))


def test_decode_refuses_oversized_messages() -> None:
    with pytest.raises(ContractError, match="over the"):
        decode("x" * (256 * 1024 + 1))


@pytest.mark.parametrize(("text", "expected"), [("octo/widgets#42", ("octo/widgets", 42)), (" a/b#1 ", ("a/b", 1))])
def test_parse_issue_ref(text: str, expected: tuple[str, int]) -> None:
    ref = parse_issue_ref(text)
    assert (ref.repo, ref.number) == expected
    assert ref.key == f"github:{expected[0]}#{expected[1]}"


@pytest.mark.parametrize("text", ["octo/widgets", "#4", "octo/widgets#0", "octo#4", "a/b#x"])
def test_parse_issue_ref_rejects_malformed_references(text: str) -> None:
    with pytest.raises(ValueError, match=r"OWNER/REPO#NUMBER|owner/name|greater than"):
        parse_issue_ref(text)


def test_committed_json_schemas_match_the_models() -> None:
    generated = message_schemas()
    committed = {path.name: json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.json")}

    assert set(committed) == set(generated), "run `make schemas` and commit libs/contracts/schemas"
    for name, schema in generated.items():
        assert committed[name] == json.loads(json.dumps(schema)), f"{name} is stale: run `make schemas`"


def test_a_nudge_from_a_producer_that_names_no_label_reads_as_naming_none() -> None:
    older = Nudge.model_validate({"issue": {"repo": "octo/widgets", "number": 1}, "reason": "issue_unlabeled"})

    assert older.label is None


def test_schema_requires_only_what_a_hand_written_message_needs() -> None:
    schema = message_schemas()["nudge.v1.schema.json"]

    assert schema["required"] == ["body", "kind", "message_id"]
    assert schema["properties"]["kind"] == {"const": "nudge", "type": "string"}


def test_deeply_nested_json_is_refused_not_crashed_on() -> None:
    with pytest.raises(ContractError, match="nested too deeply"):
        decode("[" * 100_000)


@pytest.mark.parametrize("version", ["2", 2.0, 3])
def test_a_newer_major_version_is_refused_however_it_is_spelled(version: object) -> None:
    raw = json.dumps(
        {
            "message_id": str(uuid4()),
            "kind": "nudge",
            "schema_version": version,
            "body": {"issue": {"repo": "a/b", "number": 1}},
        }
    )

    with pytest.raises(ContractError, match="newer than the supported 1"):
        decode(raw)


def test_defaults_derive_from_the_canonical_message_id() -> None:
    message_id = uuid4()
    spellings = [str(message_id), message_id.hex.upper(), "{" + str(message_id) + "}"]

    keys = {
        decode(
            json.dumps({"message_id": spelling, "kind": "nudge", "body": {"issue": {"repo": "a/b", "number": 1}}})
        ).dedupe_key
        for spelling in spellings
    }

    assert keys == {str(message_id)}

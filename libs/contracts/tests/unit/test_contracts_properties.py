import json
from typing import Any

from agent_grid_contracts.public_codec import ContractError, decode, encode
from agent_grid_contracts.public_envelope import wrap
from agent_grid_contracts.public_issues import IssueRef
from agent_grid_contracts.public_nudges import Nudge, NudgeReason, NudgeSource
from hypothesis import given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries(
    {"kind": st.sampled_from(["nudge", "launch_agent", "agent_exited", "x"]) | st.text(max_size=5)},
    optional={
        "message_id": st.uuids().map(str) | st.text(max_size=10),
        "schema_version": st.integers(-2, 3) | st.text(max_size=3),
        "body": json_values,
        "occurred_at": st.text(max_size=30),
        "dedupe_key": json_values,
    },
)


def decodes_or_refuses_clearly(raw: str | bytes) -> None:
    # Either outcome is fine; any exception other than ContractError fails the test, and so does an empty or
    # unreadably long reason.
    reason = None
    try:
        decode(raw)
    except ContractError as error:
        reason = error.reason
    assert reason is None or 0 < len(reason) < 2000


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_contract_error(raw: bytes) -> None:
    decodes_or_refuses_clearly(raw)


@given(json_values)
def test_arbitrary_json_never_raises_anything_but_a_contract_error(value: Any) -> None:
    decodes_or_refuses_clearly(json.dumps(value))


@settings(max_examples=300)
@given(envelope_like)
def test_envelope_shaped_garbage_never_raises_anything_but_a_contract_error(value: dict[str, Any]) -> None:
    decodes_or_refuses_clearly(json.dumps(value))


@given(
    repo=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,10}/[A-Za-z0-9._-]{1,12}", fullmatch=True),
    number=st.integers(1, 10**9),
    reason=st.sampled_from(NudgeReason),
    source=st.sampled_from(NudgeSource),
    detail=st.none() | st.text(max_size=200),
)
def test_every_valid_nudge_round_trips(
    repo: str, number: int, reason: NudgeReason, source: NudgeSource, detail: str | None
) -> None:
    envelope = wrap(
        Nudge(issue=IssueRef(repo=repo, number=number), reason=reason, source=source, detail=detail), producer="p"
    )

    assert decode(encode(envelope)) == envelope

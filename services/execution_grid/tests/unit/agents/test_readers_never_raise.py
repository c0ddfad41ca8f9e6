import json

from execution_grid.agents.public_registry import ADAPTER_KINDS, adapter_for
from hypothesis import given, settings
from hypothesis import strategies as st

# Keys and values the real formats use, so generated objects reach deep into every reader's branches.
KEYS = st.sampled_from(
    [
        "type",
        "subtype",
        "message",
        "usage",
        "content",
        "text",
        "id",
        "result",
        "is_error",
        "errors",
        "num_turns",
        "total_cost_usd",
        "modelUsage",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "item",
        "error",
        "role",
        "status",
        "stats",
        "severity",
        "total_tokens",
        "cached",
        "input",
        "success",
        "summary",
        "cost_usd",
        "turns",
        "budget_exhausted",
        "parent_tool_use_id",
        "terminal_reason",
        "delta",
    ]
)
TYPES = st.sampled_from(
    [
        "assistant",
        "user",
        "system",
        "result",
        "thread.started",
        "turn.completed",
        "turn.failed",
        "error",
        "item.completed",
        "message",
        "tool_use",
        "tool_result",
        "init",
        "agent_grid.usage",
        "agent_grid.result",
        "agent_message",
        "text",
        "success",
        "error_max_turns",
    ]
)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20) | TYPES
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6), max_leaves=25
)
EVENTS = st.tuples(TYPES, st.dictionaries(KEYS, VALUES, max_size=8)).map(lambda pair: {**pair[1], "type": pair[0]})
LINES = EVENTS.map(lambda event: json.dumps(event, allow_nan=True)) | st.text(max_size=200)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(ADAPTER_KINDS), lines=st.lists(LINES, max_size=12))
def test_no_line_makes_a_reader_raise(kind: str, lines: list[str]) -> None:
    reader = adapter_for(kind).reader()
    for line in lines:
        reader.feed(line)

    usage = reader.usage
    assert usage.total_tokens >= 0
    assert len(reader.summary) <= 4000
    _ = reader.reported_end

"""The machine-readable records agent-grid hides in what it writes on GitHub, and reading them back (pure).

A status comment ends with the issue's record, the roll-up block with the tree's: one HTML comment each, holding
JSON, invisible once GitHub renders the text. They are what a ledger is rebuilt from
(``coordinator.decisions.public_rebuild``). Reading is defensive: a record a person edited into nonsense
reads as none, and only agent-grid's own comment is read (callers check the author).
"""

import json
import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coordinator.decisions.public_rebuild import IssueRecord, TreeRecord

_ISSUE = "record"
_TREE = "tree-record"
_VERSION = 1
_Count = Annotated[int, Field(ge=0)]
_Money = Annotated[float, Field(ge=0)]


class _Tree(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runs: _Count = 0
    cost_usd: _Money = 0.0
    tokens: _Count = 0
    authorised_by: str | None = None
    killed: bool = False


class _Issue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runs: _Count = 0
    consecutive_failures: _Count = 0
    tree: _Tree = _Tree()
    run: str | None = None
    mode: str = "work"
    agent_kind: str = ""
    authorised_by: str | None = None


def issue_record(record: IssueRecord) -> str:
    """The hidden comment that ends a status comment."""
    issue = _Issue(
        runs=record.runs,
        consecutive_failures=record.consecutive_failures,
        tree=_tree(record.tree),
        run=record.running_run,
        mode=record.mode,
        agent_kind=record.agent_kind,
        authorised_by=record.authorised_by,
    )
    return _hidden(_ISSUE, issue)


def tree_record(record: TreeRecord) -> str:
    """The hidden comment that ends the roll-up block."""
    return _hidden(_TREE, _tree(record))


def read_issue_record(text: str, *, recorded_at: datetime) -> IssueRecord | None:
    """The issue record in a status comment's text, if there is a readable one."""
    issue = _read(text, _ISSUE, _Issue)
    if issue is None:
        return None
    return IssueRecord(
        runs=issue.runs,
        consecutive_failures=issue.consecutive_failures,
        tree=_tree_of(issue.tree),
        running_run=issue.run,
        mode=issue.mode,
        agent_kind=issue.agent_kind,
        authorised_by=issue.authorised_by,
        recorded_at=recorded_at,
    )


def read_tree_record(text: str) -> TreeRecord | None:
    """The tree record in a root's description (its roll-up block), if there is a readable one."""
    tree = _read(text, _TREE, _Tree)
    return _tree_of(tree) if tree is not None else None


def _hidden(name: str, model: BaseModel) -> str:
    # An HTML comment ends at the first "--"; JSON has it only inside strings, where "\u002d" reads the same.
    payload = json.dumps({"v": _VERSION, **model.model_dump()}, separators=(",", ":")).replace("--", "-\\u002d")
    return f"<!-- agent-grid:{name} {payload} -->"


def _read[M: BaseModel](text: str, name: str, model: type[M]) -> M | None:
    # The last one: agent-grid appends its record after anything quoted (which it also renders inert).
    found = re.findall(rf"<!-- agent-grid:{re.escape(name)} (\{{.*?\}}) -->", text, re.DOTALL)
    if not found:
        return None
    try:
        return model.model_validate_json(found[-1])
    except ValidationError:
        return None


def _tree(record: TreeRecord) -> _Tree:
    return _Tree(
        runs=record.runs,
        cost_usd=record.cost_usd,
        tokens=record.tokens,
        authorised_by=record.authorised_by,
        killed=record.killed,
    )


def _tree_of(tree: _Tree) -> TreeRecord:
    return TreeRecord(
        runs=tree.runs,
        cost_usd=tree.cost_usd,
        tokens=tree.tokens,
        authorised_by=tree.authorised_by,
        killed=tree.killed,
    )

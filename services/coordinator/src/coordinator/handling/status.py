"""The words agent-grid writes on an issue: its one sticky status comment (pure rendering)."""

from datetime import datetime

from coordinator.decisions.public_verdicts import Launch, Refuse, Wait

STATUS_KEY = "status"


def launched(verdict: Launch, run_id: str, now: datetime) -> str:
    """A run has been launched."""
    return (
        f"**agent-grid** · 🟡 **running** · `{verdict.mode.value}` run `{run_id}` ({verdict.agent_kind})\n\n"
        f"Started {_when(now)} on behalf of @{verdict.authorised_by}; "
        f"budget for this run: {verdict.max_cost_usd:.2f} USD, {verdict.max_tokens:,} tokens."
    )


def waiting(verdict: Wait, now: datetime) -> str:
    """No run yet, and why."""
    until = f" (not before {_when(verdict.not_before)})" if verdict.not_before else ""
    return f"**agent-grid** · ⏳ **waiting** · {verdict.detail}{until}\n\nChecked {_when(now)}."


def refused(verdict: Refuse, now: datetime, *, needs_human_label: str) -> str:
    """A cap or the kill switch forbids a run."""
    handoff = f" Labelled `{needs_human_label}`: a person must decide what happens next." if verdict.escalate else ""
    return f"**agent-grid** · ⛔ **stopped** · `{verdict.cap}`: {verdict.detail}.{handoff}\n\nChecked {_when(now)}."


def finished(run_id: str, reason: str, cost_usd: float, tokens: int, now: datetime, summary: str) -> str:
    """A run has ended."""
    mark = "✅" if reason == "success" else "❌"
    text = f"**agent-grid** · {mark} run `{run_id}` ended: **{reason}** · {cost_usd:.2f} USD, {tokens:,} tokens"
    quoted = "\n".join(f"> {line}" for line in summary.strip()[:500].splitlines())
    return text + f"\n\nEnded {_when(now)}." + (f"\n\n{quoted}" if quoted else "")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")

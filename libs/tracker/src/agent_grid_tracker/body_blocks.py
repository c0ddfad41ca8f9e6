"""Marked blocks inside text that humans also edit: agent-grid rewrites only what lies between its markers."""

from agent_grid_tracker.public_tracker import sticky_marker


def block_markers(key: str) -> tuple[str, str]:
    """The start and end markers of block ``key`` (HTML comments: invisible once rendered)."""
    return sticky_marker(f"{key}:start"), sticky_marker(f"{key}:end")


def replace_block(text: str, key: str, content: str) -> str:
    """``text`` with block ``key`` holding ``content``; appended after a blank line when absent.

    Everything outside the markers is kept byte for byte. A start marker without its end marker is treated
    as absent (a human may have cut the block in half) and a fresh block is appended.
    """
    start, end = block_markers(key)
    block = f"{start}\n{content.strip()}\n{end}"
    begin = text.find(start)
    finish = text.find(end, begin + len(start)) if begin >= 0 else -1
    if begin < 0 or finish < 0:
        return f"{text}{_blank_line_after(text)}{block}\n"
    return text[:begin] + block + text[finish + len(end) :]


def with_marker(key: str, body: str) -> str:
    """A sticky comment's body: the hidden marker first, then the visible text."""
    return f"{sticky_marker(key)}\n{body}"


def _blank_line_after(text: str) -> str:
    if not text or text.endswith("\n\n"):
        return ""
    return "\n" if text.endswith("\n") else "\n\n"

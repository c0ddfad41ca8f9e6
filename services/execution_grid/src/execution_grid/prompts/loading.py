"""Prompt templates: the packaged ones, or a repository's override read from the run's working copy."""

import re
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from string import Template

import structlog

_log = structlog.get_logger(__name__)

PARTS = ("preamble", "rules", "tools", "wind_down")
MODES = ("work", "plan", "manage")
NAMES = (*PARTS, *MODES)
OVERRIDE_DIR = PurePosixPath(".agent-grid/prompts")
_MAX_OVERRIDE_BYTES = 64 * 1024
# The identifiers string.Template accepts, alone on a line: `$name` or `${name}`.
_IDENTIFIER = r"[_a-z][_a-z0-9]*"
_PLACEHOLDER_LINE = re.compile(rf"^[ \t]*\$(?:\{{(?P<braced>{_IDENTIFIER})\}}|(?P<named>{_IDENTIFIER}))[ \t]*$", re.I)
_BLANK_RUN = re.compile(r"\n{3,}")


@cache
def packaged(name: str) -> str:
    """The template shipped with the grid (package data under ``templates/``)."""
    return (resources.files("execution_grid.prompts") / "templates" / f"{name}.md").read_text(encoding="utf-8")


def override(name: str, workspace: Path | None) -> str | None:
    """The repository's ``.agent-grid/prompts/<name>.md``, when the working copy has a usable one."""
    if workspace is None:
        return None
    try:
        root = workspace.resolve(strict=True)
        candidate = root / OVERRIDE_DIR / f"{name}.md"
        if not candidate.exists():
            return None
        # A symlink in the repository must not make the worker read a file of the host (its settings, a key)
        # into a prompt the agent, and whoever reads the run's files, gets to see.
        resolved = candidate.resolve(strict=True)
        if not resolved.is_relative_to(root) or not resolved.is_file():
            _log.warning("prompt_override_ignored", template=name, reason="not a file inside the working copy")
            return None
        if resolved.stat().st_size > _MAX_OVERRIDE_BYTES:
            _log.warning("prompt_override_ignored", template=name, reason=f"larger than {_MAX_OVERRIDE_BYTES} bytes")
            return None
        text = resolved.read_bytes().decode("utf-8", errors="replace")
    except (OSError, RuntimeError) as error:
        # RuntimeError: a symlink loop on older Pythons.
        _log.warning("prompt_override_ignored", template=name, reason=str(error))
        return None
    if not text.strip():
        return None
    return text


def template_for(name: str, workspace: Path | None) -> str:
    """The repository's override of ``name`` if there is one, else the packaged template."""
    found = override(name, workspace)
    return packaged(name) if found is None else found


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with ``$name`` placeholders substituted once (``safe_substitute``: unknown names stay as written).

    A line holding nothing but a placeholder whose value is empty disappears, and the blank lines around it
    collapse, so an absent section leaves no gap. Substitution is one pass over the template: values are
    inserted as they are and never scanned for placeholders, so text from an issue cannot expand anything.
    """
    kept = []
    for line in template.split("\n"):
        match = _PLACEHOLDER_LINE.match(line)
        if match is not None and values.get(match["braced"] or match["named"]) == "":
            continue
        kept.append(line)
    compact = _BLANK_RUN.sub("\n\n", "\n".join(kept))
    return Template(compact).safe_substitute(values)

"""The prompt an agent starts from: what the run is for, where its issue is, and the rules of a run."""

from agent_grid_contracts.public_launches import LaunchAgent, RunMode

_MODE_TASK = {
    RunMode.WORK: (
        "Do the work the issue asks for. If it is too big for one run, split it: create sub-issues with clear "
        "acceptance criteria instead of half-doing it."
    ),
    RunMode.PLAN: (
        "Decide how this new issue gets done: do it now if it fits in one run, or split it into ordered "
        "sub-issues (with blocked-by relations where order matters) and stop."
    ),
    RunMode.MANAGE: (
        "Resume this parent issue: read its sub-issues and their latest comments, decide what is missing, "
        "create or nudge sub-issues for it, and close the parent with a summary when everything is done."
    ),
}


def render_prompt(launch: LaunchAgent, *, wind_down_file: str, branch: str | None) -> str:
    """The prompt for ``launch``; its inputs are listed verbatim so that nothing the coordinator sent is lost."""
    task = _MODE_TASK.get(launch.mode, _MODE_TASK[RunMode.WORK])
    lines = [
        f"You are an agent-grid run ({launch.run_id}), mode `{launch.mode.value}`, on issue {launch.issue}.",
        "",
        task,
        "",
        "Rules of a run:",
        "- Progress lives in the issue: comment what you did and what is left before you stop.",
        "- Your run is short and may be cut off. When the file named by $AGENT_GRID_WIND_DOWN_FILE exists "
        f"({wind_down_file}), stop starting new work: commit what you have"
        + (f" to branch `{branch}` and push it" if branch else "")
        + ", write a hand-off comment on the issue, and exit.",
        "- Never ask a human to watch this session: nobody reads it live.",
    ]
    if launch.root_issue is not None and launch.root_issue != launch.issue:
        lines.append(f"- This issue belongs to the tree rooted at {launch.root_issue}.")
    if launch.prompt_inputs:
        lines += ["", "Inputs:"]
        lines += [f"- {name}: {value}" for name, value in sorted(launch.prompt_inputs.items())]
    return "\n".join(lines) + "\n"

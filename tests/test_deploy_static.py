"""Static checks of the deployment files: docker-compose.yml, services/*/Dockerfile, deploy/aws/*.yaml,
deploy/kubernetes/*.yaml and .env.example.

No Docker engine, cluster or AWS account is needed: the files are validated against vendored schemas (the
Compose Specification, Kubernetes 1.34; tests/fixtures/) and compared with each other and with the code they
deploy (the services' Settings, pyproject dependencies and scripts, QueueSettings defaults, the broker pin).
Each check returns a list of problems; the ``*_detect*`` tests feed it a broken copy to prove the check can fail.
"""

import copy
import fnmatch
import functools
import json
import os
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_settings import BaseServiceSettings, QueueSettings
from coordinator.settings import Settings as CoordinatorSettings
from execution_grid.settings import Settings as ExecutionGridSettings
from issue_tracker.settings import Settings as IssueTrackerSettings
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel, SecretStr, ValidationError
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
TEMPLATE_PATH = ROOT / "deploy" / "aws" / "queues.cloudformation.yaml"
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
BROKER_REQUIREMENTS_PATH = ROOT / "deploy" / "broker" / "requirements.txt"
FIXTURES = ROOT / "tests" / "fixtures"
COMPOSE_SCHEMA_PATH = FIXTURES / "compose-spec" / "compose-spec.json"
KUBERNETES_SCHEMA_DIR = FIXTURES / "kubernetes-json-schema" / "v1.34.0-local-strict"
LOCALSTACK_IMAGE = "localstack/localstack"
# What a `${VAR:?…}` stands for when a check needs a value: long enough for every secret's minimum length.
PLACEHOLDER = "placeholder-0123456789abcdef"
# GitHub abandons a webhook delivery after 10 s: no issue-tracker request outlives it.
GITHUB_DELIVERY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServiceSpec:
    compose_name: str
    directory: str
    env_prefix: str
    settings: type[BaseServiceSettings]
    policy_id: str

    @property
    def path(self) -> Path:
        return ROOT / "services" / self.directory

    @property
    def manifest(self) -> Path:
        return KUBERNETES_DIR / f"{self.compose_name}.yaml"


ISSUE_TRACKER = ServiceSpec(
    "issue-tracker", "issue_tracker", "ISSUE_TRACKER_", IssueTrackerSettings, "IssueTrackerQueuePolicy"
)
COORDINATOR = ServiceSpec("coordinator", "coordinator", "COORDINATOR_", CoordinatorSettings, "CoordinatorQueuePolicy")
EXECUTION_GRID = ServiceSpec(
    "execution-grid", "execution_grid", "EXECUTION_GRID_", ExecutionGridSettings, "ExecutionGridQueuePolicy"
)
SERVICES = (ISSUE_TRACKER, COORDINATOR, EXECUTION_GRID)
PREFIX_BY_COMPOSE_NAME = {spec.compose_name: spec.env_prefix for spec in SERVICES}
SPEC_BY_COMPOSE_NAME = {spec.compose_name: spec for spec in SERVICES}
# The secrets without which the compose grid does not work; each must be `${VAR:?Variable not set}`.
REQUIRED_COMPOSE_SECRETS = {
    "issue-tracker": ("ISSUE_TRACKER_WEBHOOK__SECRET",),
    "coordinator": ("COORDINATOR_GITHUB__TOKEN", "COORDINATOR_TOOLS__RUN_TOKEN_SECRET"),
    "execution-grid": ("EXECUTION_GRID_RUN_TOKEN_SECRET",),
}


# --- helpers -----------------------------------------------------------------------------------------------


def as_mapping(value: object, where: str) -> dict[str, Any]:
    assert isinstance(value, dict), f"{where}: expected a mapping, got {type(value).__name__}"
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        pytest.fail(f"{path.relative_to(ROOT)} is not plain YAML (use Fn::Sub/Fn::GetAtt, not !Sub/!GetAtt): {error}")
    return as_mapping(loaded, str(path.relative_to(ROOT)))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float:
    """A Compose duration (``30s``, ``1m30s``, ``1500ms``) in seconds; ValueError otherwise."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a Compose duration: {text!r}")
    return sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, whether written as a mapping or as a list of ``KEY=value``."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(key): str(value) for key, value in as_mapping(raw, "environment").items()}


def built_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = as_mapping(compose.get("services"), "services")
    return {name: as_mapping(body, name) for name, body in services.items() if "build" in body}


def port_mappings(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(host_ip, published, target) for each published port, short or long syntax."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            yield str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry.get("target", ""))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]
        elif len(parts) == 2:
            yield "", parts[0], parts[1]
        else:
            yield "", "", parts[0]


def read_pyproject(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        return tomllib.load(file)


def workspace_member_pyprojects() -> list[str]:
    """Repo-relative paths of every workspace member's pyproject.toml, from the root's member globs."""
    members: list[str] = read_pyproject(ROOT / "pyproject.toml")["tool"]["uv"]["workspace"]["members"]
    found = {str(path.relative_to(ROOT)) for pattern in members for path in ROOT.glob(f"{pattern}/pyproject.toml")}
    return sorted(found)


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Member:
    name: str
    directory: str
    dependencies: tuple[str, ...]
    scripts: tuple[str, ...]


def workspace_members() -> dict[str, Member]:
    """Every workspace member by normalized distribution name, with its dependencies' normalized names."""
    members = {}
    for pyproject_path in workspace_member_pyprojects():
        project = read_pyproject(ROOT / pyproject_path)["project"]
        requirements = project.get("dependencies", [])
        names = tuple(
            normalize_name(re.split(r"[\s\[<>=!~;(@]", requirement, maxsplit=1)[0]) for requirement in requirements
        )
        name = normalize_name(project["name"])
        directory = str(Path(pyproject_path).parent)
        members[name] = Member(name, directory, names, tuple(project.get("scripts", {})))
    return members


def member_closure(project_name: str, members: Mapping[str, Member]) -> list[Member]:
    """The member itself and every workspace member it depends on, directly or not."""
    seen: dict[str, Member] = {}
    pending = [normalize_name(project_name)]
    while pending:
        name = pending.pop()
        if name in seen or name not in members:
            continue
        seen[name] = members[name]
        pending.extend(members[name].dependencies)
    return sorted(seen.values(), key=lambda member: member.directory)


# --- settings: what a variable means to a service -----------------------------------------------------------


def _without_none(annotation: object) -> list[object]:
    """The alternatives of ``X | None`` / ``Optional[X]`` other than None, or the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _resolve(annotation: object, path: list[str]) -> object | None:
    if not path:
        return annotation
    for candidate in _without_none(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            fields = {key.lower(): field for key, field in candidate.model_fields.items()}
            field = fields.get(path[0])
            if field is not None:
                return _resolve(field.annotation, path[1:])
        elif typing.get_origin(candidate) is dict:
            # A mapping of sections (EXECUTION_GRID_AGENTS__CLAUDE_CODE__API_KEY): the key is free.
            return _resolve(typing.get_args(candidate)[1], path[1:])
    return None


def setting_of(spec: ServiceSpec, variable: str) -> object | None:
    """The annotation of the Settings field a variable sets, as pydantic-settings reads it; None when none.

    pydantic-settings ignores unknown variables (``extra="ignore"``) and unknown nested keys alike, so a
    misspelt variable would silently leave its default in force.
    """
    if not variable.startswith(spec.env_prefix):
        return None
    return _resolve(spec.settings, variable.removeprefix(spec.env_prefix).lower().split("__"))


def is_secret(annotation: object) -> bool:
    return any(candidate is SecretStr for candidate in _without_none(annotation))


def setting_name_problems(spec: ServiceSpec, variables: Iterable[str], where: str) -> list[str]:
    problems = []
    for variable in variables:
        if not variable.startswith(spec.env_prefix):
            problems.append(f"{where}: {variable} does not start with {spec.env_prefix} (the service ignores it)")
        elif setting_of(spec, variable) is None:
            problems.append(f"{where}: {variable} names no field of {spec.directory}'s Settings (ignored as a typo)")
    return problems


def build_settings(spec: ServiceSpec, environment: Mapping[str, str]) -> BaseServiceSettings:
    """The service's Settings from exactly this environment, as the process would build them."""
    with mock.patch.dict(os.environ, environment, clear=True):
        return spec.settings()


@functools.cache
def default_settings(spec: ServiceSpec) -> BaseServiceSettings:
    return build_settings(spec, {})


def setting_value_problems(spec: ServiceSpec, environment: Mapping[str, str], where: str) -> list[str]:
    try:
        build_settings(spec, environment)
    except ValidationError as error:
        return [f"{where}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    return []


def shutdown_need_s(spec: ServiceSpec) -> float:
    """How long the service may take to stop cleanly after SIGTERM: the grace periods must exceed it."""
    match default_settings(spec):
        case ExecutionGridSettings() as grid:
            # Launches drain first, then running agents get their hand-off, then SIGTERM's grace before SIGKILL.
            supervision = grid.supervision
            return grid.launch_consumer.drain_timeout_s + supervision.shutdown_grace_s + supervision.term_grace_s
        case CoordinatorSettings() as coordinator:
            return max(coordinator.nudge_consumer.drain_timeout_s, coordinator.lifecycle_consumer.drain_timeout_s)
        case _:
            return GITHUB_DELIVERY_TIMEOUT_S


# --- Compose interpolation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpolation:
    """One ``${NAME<operator><argument>}`` (or ``$NAME``) of the Compose interpolation syntax."""

    name: str
    operator: str
    argument: str

    @property
    def required(self) -> bool:
        return self.operator in {":?", "?"}

    @property
    def has_default(self) -> bool:
        return self.operator in {":-", "-"}


_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?", re.DOTALL)


def _interpolation(match: re.Match[str]) -> Interpolation:
    if match["bare"]:
        return Interpolation(match["bare"], "", "")
    parsed = _BRACED.fullmatch(match["braced"])
    if parsed is None:
        raise ValueError(f"malformed interpolation {match[0]!r}")
    if "$" in (parsed["argument"] or ""):
        raise ValueError(f"nested interpolation {match[0]!r} is beyond this check; keep defaults literal")
    return Interpolation(parsed["name"], parsed["operator"] or "", parsed["argument"] or "")


def interpolations(text: str) -> list[Interpolation]:
    """Every interpolation in a string (``$$`` is a literal dollar); ValueError for a malformed one."""
    return [_interpolation(match) for match in _INTERPOLATION.finditer(text) if not match["escaped"]]


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """What Compose makes of a string; ValueError when a required variable is missing."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        item = _interpolation(match)
        value = environment.get(item.name)
        present = bool(value) if item.operator.startswith(":") else value is not None
        if item.has_default:
            return value if present and value is not None else item.argument
        if item.required:
            if not present or value is None:
                raise ValueError(f"{item.name}: {item.argument}")
            return value
        if item.operator in {":+", "+"}:
            return item.argument if present else ""
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def compose_strings(node: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string value in the document (Compose interpolates values, not keys)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from compose_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from compose_strings(item, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def interpolated(node: object, environment: Mapping[str, str]) -> object:
    if isinstance(node, dict):
        return {key: interpolated(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, environment) for item in node]
    if isinstance(node, str):
        return interpolate(node, environment)
    return node


def required_placeholders(compose: dict[str, Any]) -> dict[str, str]:
    """A value for every required variable, so that the file can be interpolated as `docker compose` would."""
    placeholders: dict[str, str] = {}
    for _, text in compose_strings(compose):
        try:
            placeholders |= {item.name: PLACEHOLDER for item in interpolations(text) if item.required}
        except ValueError:
            continue  # reported by the checks that read the string itself
    return placeholders


def interpolated_compose(compose: dict[str, Any]) -> dict[str, Any]:
    return as_mapping(interpolated(compose, required_placeholders(compose)), "compose")


# --- .env.example --------------------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
COMPOSE_SECTION = "# --- docker compose"


def env_example_variables(text: str) -> dict[str, str]:
    """Every variable .env.example documents, commented out or not, with its example value."""
    found = {}
    for line in text.splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            found[match["name"]] = match["value"]
    return found


def env_example_section(text: str, header: str) -> dict[str, str]:
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(header)]
    if not starts:
        return {}
    section = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("# ---"):
            break
        section.append(line)
    return env_example_variables("\n".join(section))


# --- .dockerignore ---------------------------------------------------------------------------------------------


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def dockerignored(path: str, patterns: Iterable[str]) -> str | None:
    """The pattern that keeps ``path`` (or a directory above it) out of the build context, if any.

    Enough of Docker's rules for this repository: ``*``/``?`` within a component, a leading ``**/`` for any
    depth. Negations are not understood, so a check that meets one says so instead of guessing.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            return pattern
        bare = pattern.strip("/").removeprefix("**/")
        anywhere = pattern.startswith("**/")
        for prefix in prefixes:
            components = prefix.split("/")
            tails = ["/".join(components[start:]) for start in range(len(components))] if anywhere else [prefix]
            if any(fnmatch.fnmatchcase(tail, bare) for tail in tails):
                return pattern
    return None


# --- Dockerfile parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (enough for these checks)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        joined = " ".join([*pending, stripped])
        pending = []
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise ValueError(f"line continuation at end of file (from line {start})")
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [index for index, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else []


def exec_form(arguments: str) -> list[str]:
    """The argv of an exec-form (JSON array) or shell-form argument string."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return shlex.split(arguments)


def env_assignments(stage: list[Instruction]) -> dict[str, str]:
    assignments: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for token in shlex.split(instruction.arguments):
                key, _, value = token.partition("=")
                assignments[key] = value
    return assignments


def uv_sync_packages(instructions: list[Instruction]) -> list[tuple[Instruction, list[str], str | None]]:
    """Each RUN that calls ``uv sync``: the instruction, its tokens, and its ``--package`` value."""
    found: list[tuple[Instruction, list[str], str | None]] = []
    for instruction in instructions:
        if instruction.keyword != "RUN" or "uv sync" not in instruction.arguments:
            continue
        tokens = shlex.split(instruction.arguments)
        package = None
        for index, token in enumerate(tokens):
            if token == "--package" and index + 1 < len(tokens):
                package = tokens[index + 1]
            elif token.startswith("--package="):
                package = token.partition("=")[2]
        found.append((instruction, tokens, package))
    return found


def copied_sources(instructions: list[Instruction]) -> set[str]:
    """Build-context paths made available by COPY (not COPY --from) and RUN --mount=type=bind."""
    sources: set[str] = set()
    for instruction in instructions:
        tokens = shlex.split(instruction.arguments)
        if instruction.keyword == "COPY" and not any(token.startswith("--from") for token in tokens):
            sources.update(token.rstrip("/") for token in [t for t in tokens if not t.startswith("--")][:-1])
        for token in tokens:
            if token.startswith("--mount=") and "type=bind" in token:
                options = dict(option.partition("=")[::2] for option in token.removeprefix("--mount=").split(","))
                sources.add(options.get("source", options.get("src", "")).rstrip("/"))
    return sources


def _sync_problems(instructions: list[Instruction], spec: ServiceSpec, project_name: str) -> list[str]:
    """The two-step ``uv sync`` of L5: dependencies from the lock alone, then the workspace source."""
    problems: list[str] = []
    syncs = uv_sync_packages(instructions)
    if len(syncs) < 2:
        return [f"expected two `uv sync` steps (dependencies, then source), found {len(syncs)}"]
    if "--no-install-workspace" not in syncs[0][1]:
        problems.append(f"line {syncs[0][0].line}: the first `uv sync` lacks --no-install-workspace")
    if "--no-install-workspace" in syncs[-1][1]:
        problems.append(f"line {syncs[-1][0].line}: the last `uv sync` must install the workspace")
    for instruction, tokens, package in syncs:
        if package != project_name:
            problems.append(f"line {instruction.line}: uv sync --package {package!r}, pyproject says {project_name!r}")
        if "--frozen" not in tokens and "--locked" not in tokens:
            problems.append(f"line {instruction.line}: uv sync without --frozen/--locked ignores uv.lock")
        if "--no-dev" not in tokens:
            problems.append(f"line {instruction.line}: uv sync without --no-dev installs the dev group")

    before_first = copied_sources(instructions[: instructions.index(syncs[0][0])])
    needed = ["pyproject.toml", "uv.lock", *workspace_member_pyprojects()]
    problems += [
        f"{path} is not copied before the first uv sync (the lock needs it)"
        for path in needed
        if path not in before_first
    ]
    # The last sync builds the service and every workspace member it depends on from source: each must be in
    # the image by then (a new lib dependency is easy to forget here, and only a real build would say so).
    before_last = copied_sources(instructions[: instructions.index(syncs[-1][0])])
    problems += [
        f"{member.directory}/ ({member.name}) is not copied before the last uv sync"
        for member in member_closure(project_name, workspace_members())
        if not any(source in {"", "."} or f"{member.directory}/".startswith(f"{source}/") for source in before_last)
    ]
    return problems


def _runtime_stage_problems(
    stage: list[Instruction], spec: ServiceSpec, pyproject: dict[str, Any], container_port: str
) -> list[str]:
    """The image that runs: non-root, listening on all interfaces, health-checked, exec-form console script."""
    problems: list[str] = []
    users = [instruction.arguments.split(":")[0] for instruction in stage if instruction.keyword == "USER"]
    if not users or users[-1] in {"root", "0"}:
        problems.append(f"the final stage runs as root (USER lines: {users})")
    environment = env_assignments(stage)
    problems += setting_name_problems(spec, [name for name in environment if name.startswith(spec.env_prefix)], "ENV")
    if environment.get(f"{spec.env_prefix}HTTP__HOST") != "0.0.0.0":
        problems.append(f"ENV {spec.env_prefix}HTTP__HOST=0.0.0.0 missing: the service would listen on loopback")
    if "/app/.venv/bin" not in environment.get("PATH", ""):
        problems.append("ENV PATH does not include the virtual environment's bin directory")

    exposed = [port.split("/")[0] for i in stage if i.keyword == "EXPOSE" for port in i.arguments.split()]
    if exposed != [container_port]:
        problems.append(f"EXPOSE {exposed} differs from the compose container port {container_port}")

    healthchecks = [instruction for instruction in stage if instruction.keyword == "HEALTHCHECK"]
    if not healthchecks or "/healthz" not in healthchecks[-1].arguments:
        problems.append("no HEALTHCHECK probing /healthz")

    commands = [instruction for instruction in stage if instruction.keyword == "CMD"]
    if not commands:
        return [*problems, "no CMD"]
    if not commands[-1].arguments.startswith("["):
        problems.append("CMD is in shell form: the service would not receive SIGTERM directly")
    argv = exec_form(commands[-1].arguments)
    scripts: dict[str, str] = pyproject["project"].get("scripts", {})
    if not argv or argv[0] not in scripts:
        problems.append(
            f"CMD {argv} is not a [project.scripts] entry of {pyproject['project']['name']} ({sorted(scripts)})"
        )
    return problems


def dockerfile_problems(text: str, spec: ServiceSpec, pyproject: dict[str, Any], container_port: str) -> list[str]:
    """Every way this Dockerfile disagrees with the L5 pattern, its pyproject or the compose port."""
    instructions = parse_dockerfile(text)
    froms = [instruction for instruction in instructions if instruction.keyword == "FROM"]
    if not froms:
        return ["no FROM line"]
    problems = [
        f"line {i.line}: FROM {i.arguments!r} is not python:3.12-slim"
        for i in froms
        if not i.arguments.split()[0].startswith("python:3.12-slim")
    ]
    problems += _sync_problems(instructions, spec, pyproject["project"]["name"])
    problems += _runtime_stage_problems(final_stage(instructions), spec, pyproject, container_port)
    return problems


def dockerignore_problems(patterns: list[str], spec: ServiceSpec) -> list[str]:
    """What the last uv sync builds must not be cut out of the build context by .dockerignore."""
    members = workspace_members()
    problems = []
    for member in member_closure(read_pyproject(spec.path / "pyproject.toml")["project"]["name"], members):
        module = read_pyproject(ROOT / member.directory / "pyproject.toml")["tool"]["uv"]["build-backend"][
            "module-name"
        ]
        for path in (f"{member.directory}/pyproject.toml", f"{member.directory}/src/{module}/__init__.py"):
            pattern = dockerignored(path, patterns)
            if pattern is not None:
                problems.append(
                    f".dockerignore pattern {pattern!r} drops {path}, which the {spec.compose_name} image builds"
                )
    return problems


def tools_command_problems(members: Mapping[str, Member]) -> list[str]:
    """The agents' tools command, which the grid registers with agent CLIs, must be installed in its image."""
    command = default_settings(EXECUTION_GRID)
    assert isinstance(command, ExecutionGridSettings)
    executable = command.tools_command[0]
    project = read_pyproject(EXECUTION_GRID.path / "pyproject.toml")["project"]["name"]
    installed = {script for member in member_closure(project, members) for script in member.scripts}
    if executable not in installed:
        return [f"the grid's tools command {executable!r} is no script of a member its image installs"]
    return []


# --- compose checks ----------------------------------------------------------------------------------------


def compose_structure_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    if "version" in compose:
        problems.append("top-level `version` is obsolete in the Compose Specification")
    services = as_mapping(compose.get("services"), "services")
    if set(built_services(compose)) != set(PREFIX_BY_COMPOSE_NAME):
        problems.append(f"built services {sorted(built_services(compose))} != {sorted(PREFIX_BY_COMPOSE_NAME)}")
    for name, body in built_services(compose).items():
        build = body["build"]
        build = {"context": build} if isinstance(build, str) else as_mapping(build, f"{name}.build")
        context = ROOT / str(build.get("context", "."))
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        if not dockerfile.is_file():
            problems.append(f"{name}: build points to {dockerfile.relative_to(ROOT)}, which does not exist")
    for name, body in services.items():
        for host_ip, published, target in port_mappings(as_mapping(body, name)):
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {published}:{target} is published on {host_ip or 'every interface'}")
    return problems


def compose_health_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = as_mapping(compose.get("services"), "services")
    healthy = set()
    for name, body in services.items():
        check = body.get("healthcheck")
        if not isinstance(check, dict) or check.get("disable") or not check.get("test"):
            problems.append(f"{name}: no healthcheck with a test")
        elif check["test"] in ("NONE", ["NONE"]):
            problems.append(f"{name}: healthcheck test is NONE")
        else:
            healthy.add(name)
    for name, body in services.items():
        depends_on = body.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on is a list; use {{<service>: {{condition: service_healthy}}}}")
            continue
        for target, condition in as_mapping(depends_on, f"{name}.depends_on").items():
            if target not in services:
                problems.append(f"{name}: depends_on {target!r}, which is not a service")
            if not isinstance(condition, dict) or condition.get("condition") != "service_healthy":
                problems.append(f"{name}: depends_on {target!r} without condition: service_healthy")
            elif target in services and target not in healthy:
                problems.append(f"{name}: waits for {target!r} to be healthy, but it has no healthcheck")
    return problems


def broker_pin() -> str:
    match = re.search(r"^localstack-core==(\S+)", BROKER_REQUIREMENTS_PATH.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"no localstack-core== pin in {BROKER_REQUIREMENTS_PATH.relative_to(ROOT)}"
    return match.group(1)


def localstack_problems(compose: dict[str, Any], pinned: str) -> list[str]:
    services = as_mapping(compose.get("services"), "services")
    images = [str(body.get("image", "")) for body in services.values() if isinstance(body, dict)]
    localstack = [image for image in images if image.split(":")[0] == LOCALSTACK_IMAGE]
    if len(localstack) != 1:
        return [f"expected one {LOCALSTACK_IMAGE} service, found {localstack}"]
    tag = localstack[0].partition(":")[2]
    if tag != pinned:
        return [f"{localstack[0]} does not match the embedded broker's localstack-core=={pinned}"]
    return []


def stop_grace_problems(compose: dict[str, Any], need_s: Mapping[str, float]) -> list[str]:
    """Each built service's stop_grace_period exceeds what it needs to stop cleanly (``need_s`` by service)."""
    problems = []
    for name, body in built_services(compose).items():
        need = need_s[name]
        raw = body.get("stop_grace_period")
        if raw is None:
            problems.append(f"{name}: no stop_grace_period (the default 10 s cuts its {need} s shutdown)")
            continue
        try:
            grace_s = parse_duration_s(str(raw))
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        if grace_s <= need:
            problems.append(f"{name}: stop_grace_period {raw} does not exceed its shutdown time {need} s")
    return problems


def environment_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = as_mapping(compose.get("services"), "services")
    for name, body in built_services(compose).items():
        prefix = PREFIX_BY_COMPOSE_NAME.get(name)
        if prefix is None:
            continue
        environment = environment_of(body)
        problems += [
            f"{name}: {key} starts with neither {prefix} nor AWS_ (the service ignores it)"
            for key in environment
            if not (key.startswith(prefix) or key.startswith("AWS_"))
        ]
        endpoint = environment.get(f"{prefix}AWS__ENDPOINT_URL")
        if endpoint is not None and urlsplit(endpoint).hostname not in services:
            problems.append(f"{name}: endpoint {endpoint} does not name a compose service")
    # Every service bootstraps the same queues; different attributes would make them fight over the topology.
    for setting in ("QUEUES__PREFIX", "QUEUES__MAX_RECEIVE_COUNT", "AWS__REGION"):
        values = {
            name: environment_of(body).get(PREFIX_BY_COMPOSE_NAME[name] + setting)
            for name, body in built_services(compose).items()
            if name in PREFIX_BY_COMPOSE_NAME
        }
        if len(set(values.values())) > 1:
            problems.append(f"services disagree on *_{setting}: {values}")
    return problems


def compose_schema_problems(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The file as `docker compose` validates it: interpolated first, then against the Compose Specification."""
    try:
        document = interpolated_compose(compose)
    except ValueError as error:
        return [f"interpolation: {error}"]
    return schema_errors(Draft7Validator(schema), document)


def schema_errors(validator: Draft7Validator | Draft202012Validator, document: object) -> list[str]:
    """One line per error; for a oneOf/anyOf, the branch that came closest (what a human would fix)."""
    problems = []
    for error in validator.iter_errors(document):
        closest = best_match([error])
        problems.append(f"{'/'.join(map(str, closest.absolute_path)) or '(root)'}: {closest.message}")
    return sorted(problems)


def interpolation_problems(compose: dict[str, Any], env_example: str) -> list[str]:
    """Every ${VAR} is documented in .env.example or has a default; the compose section lists no stale one."""
    documented = env_example_variables(env_example)
    problems = []
    used = set()
    for path, text in compose_strings(compose):
        try:
            items = interpolations(text)
        except ValueError as error:
            problems.append(f"{path}: {error}")
            continue
        for item in items:
            used.add(item.name)
            if item.name not in documented and not item.has_default:
                problems.append(f"{path}: ${{{item.name}}} has no default and is not in .env.example")
    section = env_example_section(env_example, COMPOSE_SECTION)
    if not section:
        problems.append(f".env.example has no section {COMPOSE_SECTION!r}")
    problems += [
        f".env.example documents {name} for docker compose, which never uses it" for name in sorted(set(section) - used)
    ]
    problems += [
        f"{name} is required by docker-compose.yml but absent from the compose section of .env.example"
        for name in sorted(required_placeholders(compose))
        if name not in section
    ]
    return problems


def compose_settings_problems(compose: dict[str, Any]) -> list[str]:
    """Every service variable names a field of the service's Settings, and the values build valid Settings."""
    problems = []
    try:
        document = interpolated_compose(compose)
    except ValueError as error:
        return [f"interpolation: {error}"]
    for name, body in built_services(document).items():
        spec = SPEC_BY_COMPOSE_NAME.get(name)
        if spec is None:
            continue
        environment = {key: value for key, value in environment_of(body).items() if key.startswith(spec.env_prefix)}
        problems += setting_name_problems(spec, environment, name)
        problems += setting_value_problems(spec, environment, name)
    return problems


_WHOLE_INTERPOLATION = re.compile(r"\$\{[^}]*\}")


def compose_secret_problems(compose: dict[str, Any]) -> list[str]:
    """Secrets come from the environment, never from the file: required when the grid needs them, shared alike."""
    problems = []
    for name, body in built_services(compose).items():
        spec = SPEC_BY_COMPOSE_NAME.get(name)
        if spec is None:
            continue
        environment = environment_of(body)
        local_broker = f"{spec.env_prefix}AWS__ENDPOINT_URL" in environment
        for key, value in environment.items():
            if not is_secret(setting_of(spec, key)):
                continue
            if local_broker and key.startswith(f"{spec.env_prefix}AWS__"):
                continue  # LocalStack accepts any credentials; real ones are never needed here
            if not _WHOLE_INTERPOLATION.fullmatch(value):
                problems.append(f"{name}: {key} is written into the file; take it from a variable")
            elif (item := interpolations(value)[0]).has_default and item.argument:
                problems.append(f"{name}: {key} defaults to a value written into the file")
        for key in REQUIRED_COMPOSE_SECRETS.get(name, ()):
            value = environment.get(key, "")
            items = interpolations(value) if _WHOLE_INTERPOLATION.fullmatch(value) else []
            if not items or items[0].operator != ":?":
                problems.append(f"{name}: {key} is {value!r}; the grid needs it: ${{VAR:?Variable not set}}")
    services = built_services(compose)
    shared = [
        environment_of(services.get(service, {})).get(key)
        for service, key in (
            ("coordinator", "COORDINATOR_TOOLS__RUN_TOKEN_SECRET"),
            ("execution-grid", "EXECUTION_GRID_RUN_TOKEN_SECRET"),
        )
    ]
    if len(set(shared)) != 1:
        problems.append(f"the coordinator and the grid must share the run token secret, got {shared}")
    return problems


def compose_tools_problems(compose: dict[str, Any]) -> list[str]:
    """The grid hands its agents the coordinator's URL for /tools/v1: it must be the coordinator's service."""
    services = built_services(compose)
    url = environment_of(services.get("execution-grid", {})).get("EXECUTION_GRID_TOOLS_URL")
    if not url:
        return ["execution-grid: EXECUTION_GRID_TOOLS_URL is not set, so agents run without their tools"]
    parts = urlsplit(url)
    coordinator_ports = [target for _, _, target in port_mappings(services.get("coordinator", {}))]
    problems = []
    if parts.hostname != "coordinator":
        problems.append(f"execution-grid: EXECUTION_GRID_TOOLS_URL {url} does not name the coordinator service")
    if str(parts.port) not in coordinator_ports:
        problems.append(
            f"execution-grid: EXECUTION_GRID_TOOLS_URL {url} is not the coordinator's port {coordinator_ports}"
        )
    if parts.path not in {"", "/"}:
        problems.append(
            f"execution-grid: EXECUTION_GRID_TOOLS_URL {url} must be the base URL (the tools add /tools/v1)"
        )
    return problems


def env_example_problems(env_example: str) -> list[str]:
    """The service variables .env.example shows name real settings (a typo there is copied into every .env)."""
    variables = env_example_variables(env_example)
    problems = []
    for spec in SERVICES:
        names = [name for name in variables if name.startswith(spec.env_prefix)]
        problems += setting_name_problems(spec, names, ".env.example")
    return problems


# --- CloudFormation checks ---------------------------------------------------------------------------------


def sub_text(value: object) -> str:
    """The string of a plain value or of ``{"Fn::Sub": "..."}``."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return str(value["Fn::Sub"])
    return str(value)


def getatt_target(value: object) -> str | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return str(target[0]) if isinstance(target, list) else str(target).split(".")[0]
    return None


def template_references(node: object) -> Iterator[str]:
    """Logical ids named by Ref, Fn::GetAtt and ${...} in Fn::Sub, anywhere in the template."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                yield str(value)
            elif key == "Fn::GetAtt":
                yield str(getatt_target(node))
            elif key == "Fn::Sub" and isinstance(value, str):
                yield from (name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", value))
            yield from template_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from template_references(item)


def queues_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = as_mapping(template.get("Resources"), "Resources")
    return {
        logical_id: as_mapping(body.get("Properties", {}), logical_id)
        for logical_id, body in resources.items()
        if isinstance(body, dict) and body.get("Type") == "AWS::SQS::Queue"
    }


def template_problems(template: dict[str, Any]) -> list[str]:
    problems = []
    queues = queues_of(template)
    if len(queues) != 2 * len(QueueName):
        problems.append(f"expected {2 * len(QueueName)} queues (each with a DLQ), found {sorted(queues)}")
    by_name = {sub_text(properties.get("QueueName")): logical_id for logical_id, properties in queues.items()}
    for queue in QueueName:
        work_id = by_name.get(f"${{Prefix}}-{queue.value}")
        dead_letter_id = by_name.get(f"${{Prefix}}-{queue.value}-dlq")
        if work_id is None or dead_letter_id is None:
            problems.append(f"{queue.value}: no queue named ${{Prefix}}-{queue.value} and/or its -dlq")
            continue
        redrive = queues[work_id].get("RedrivePolicy")
        if not isinstance(redrive, dict) or getatt_target(redrive.get("deadLetterTargetArn")) != dead_letter_id:
            problems.append(f"{work_id}: RedrivePolicy does not target its own DLQ {dead_letter_id} ({redrive})")
        elif redrive.get("maxReceiveCount") != {"Ref": "MaxReceiveCount"}:
            problems.append(f"{work_id}: maxReceiveCount is not the MaxReceiveCount parameter")
        allow = queues[dead_letter_id].get("RedriveAllowPolicy")
        sources = [sub_text(arn) for arn in allow.get("sourceQueueArnList", [])] if isinstance(allow, dict) else []
        if not isinstance(allow, dict) or allow.get("redrivePermission") != "byQueue" or not sources:
            problems.append(f"{dead_letter_id}: no RedriveAllowPolicy with redrivePermission byQueue")
        elif not all(source.endswith(f":${{Prefix}}-{queue.value}") for source in sources):
            problems.append(f"{dead_letter_id}: RedriveAllowPolicy admits {sources}, not only {work_id}")
        if "RedrivePolicy" in queues[dead_letter_id]:
            problems.append(f"{dead_letter_id}: a DLQ must not redrive further")
    problems += [
        f"{logical_id}: SqsManagedSseEnabled is not true"
        for logical_id, properties in queues.items()
        if properties.get("SqsManagedSseEnabled") is not True
    ]

    declared = set(as_mapping(template.get("Parameters", {}), "Parameters")) | set(template["Resources"])
    problems += [
        f"reference to undeclared {name!r}"
        for name in sorted(set(template_references(template)))
        if name not in declared and not name.startswith("AWS::")
    ]

    outputs = as_mapping(template.get("Outputs", {}), "Outputs")
    values = [output.get("Value") for output in outputs.values() if isinstance(output, dict)]
    for logical_id in queues:
        if {"Ref": logical_id} not in values:
            problems.append(f"no output with the URL of {logical_id}")
        if not any(getatt_target(value) == logical_id for value in values):
            problems.append(f"no output with the ARN of {logical_id}")
    return problems


def parameter_default_problems(template: dict[str, Any], settings: QueueSettings) -> list[str]:
    parameters = as_mapping(template.get("Parameters"), "Parameters")
    expected: dict[str, object] = {
        "Prefix": settings.prefix,
        "MaxReceiveCount": settings.max_receive_count,
        "MessageRetentionPeriod": settings.message_retention_s,
        **{f"{queue.value.capitalize()}VisibilityTimeout": settings.visibility_timeout_s for queue in QueueName},
    }
    problems = []
    for name, value in expected.items():
        default = as_mapping(parameters.get(name, {}), name).get("Default")
        if str(default) != str(value):
            problems.append(f"parameter {name} defaults to {default!r}; QueueSettings says {value!r}")
    return problems


def queue_name_of(resource: object, queues: Mapping[str, dict[str, Any]]) -> str | None:
    """``nudges``, ``nudges-dlq``, ``ctl-*``…: the queue a policy resource or alarm dimension names, sans prefix."""
    target = getatt_target(resource)
    text = sub_text(queues[target].get("QueueName")) if target is not None and target in queues else sub_text(resource)
    marker = "${Prefix}-"
    return text.rpartition(marker)[2] if marker in text else None


def template_alarm_problems(template: dict[str, Any]) -> list[str]:
    """Every dead-letter queue, the workers' shared control DLQ included, has an alarm on its depth."""
    queues = queues_of(template)
    resources = as_mapping(template.get("Resources"), "Resources")
    watched = set()
    problems = []
    for logical_id, body in resources.items():
        if not isinstance(body, dict) or body.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        properties = as_mapping(body.get("Properties", {}), logical_id)
        dimensions = properties.get("Dimensions") or []
        names = [queue_name_of(d.get("Value"), queues) for d in dimensions if d.get("Name") == "QueueName"]
        expected = {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
        }
        wrong = {key: properties.get(key) for key, value in expected.items() if properties.get(key) != value}
        if wrong or len(names) != 1 or names[0] is None:
            problems.append(f"{logical_id}: not an alarm on one queue's visible messages above 0 ({wrong or names})")
            continue
        if "AlarmActions" not in properties:
            problems.append(f"{logical_id}: no AlarmActions (nobody would hear of it)")
        watched.add(names[0])
    dead_letter_queues = {f"{queue.value}-dlq" for queue in QueueName} | {"ctl-dlq"}
    problems += [f"no alarm on the depth of <Prefix>-{name}" for name in sorted(dead_letter_queues - watched)]
    return problems


_ALL_QUEUES = [f"{queue.value}{suffix}" for queue in QueueName for suffix in ("", "-dlq")]
_CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")


def _grants(actions: Iterable[str], queues: Iterable[str]) -> set[tuple[str, str]]:
    return {(action, queue) for action in actions for queue in queues}


# Least privilege per service, as deploy/README.md ("IAM permissions") explains it. Every service resolves all six
# queues and reads depths; a consumer dead-letters poison messages itself; grid workers create their own
# control queues (<prefix>-ctl-<worker>, and the shared <prefix>-ctl-dlq), where the coordinator sends CancelRun.
EXPECTED_GRANTS = {
    "IssueTrackerQueuePolicy": _grants(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), _ALL_QUEUES)
    | _grants(("sqs:SendMessage",), ("nudges",)),
    "CoordinatorQueuePolicy": _grants(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), _ALL_QUEUES)
    | _grants(_CONSUME, ("nudges", "lifecycle"))
    | _grants(("sqs:SendMessage",), ("launches", "nudges", "nudges-dlq", "lifecycle-dlq"))
    | _grants(("sqs:GetQueueUrl", "sqs:SendMessage"), ("ctl-*",)),
    "ExecutionGridQueuePolicy": _grants(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), _ALL_QUEUES)
    | _grants(_CONSUME, ("launches",))
    | _grants(("sqs:SendMessage",), ("lifecycle", "launches-dlq"))
    | _grants(
        (
            "sqs:CreateQueue",
            "sqs:GetQueueUrl",
            "sqs:GetQueueAttributes",
            "sqs:SetQueueAttributes",
            *_CONSUME,
            "sqs:SendMessage",
        ),
        ("ctl-*",),
    ),
}


def template_policy_problems(template: dict[str, Any]) -> list[str]:
    """Each service's managed policy grants exactly its expected actions, and an output exports its ARN."""
    queues = queues_of(template)
    resources = as_mapping(template.get("Resources"), "Resources")
    outputs = as_mapping(template.get("Outputs", {}), "Outputs")
    problems = []
    for spec in SERVICES:
        body = resources.get(spec.policy_id)
        if not isinstance(body, dict) or body.get("Type") != "AWS::IAM::ManagedPolicy":
            problems.append(f"no AWS::IAM::ManagedPolicy {spec.policy_id} for the {spec.compose_name}")
            continue
        granted: set[tuple[str, str]] = set()
        for statement in body["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Effect") != "Allow" or "NotAction" in statement or "NotResource" in statement:
                problems.append(f"{spec.policy_id}: statement {statement.get('Sid')} is not a plain Allow")
            actions = statement.get("Action", [])
            targets = statement.get("Resource", [])
            for action in actions if isinstance(actions, list) else [actions]:
                for target in targets if isinstance(targets, list) else [targets]:
                    granted.add((str(action), queue_name_of(target, queues) or f"?{target}"))
        expected = EXPECTED_GRANTS[spec.policy_id]
        problems += [f"{spec.policy_id}: lacks {action} on {queue}" for action, queue in sorted(expected - granted)]
        problems += [
            f"{spec.policy_id}: grants {action} on {queue} too" for action, queue in sorted(granted - expected)
        ]
        output = outputs.get(spec.policy_id.replace("QueuePolicy", "PolicyArn"))
        if not isinstance(output, dict) or output.get("Value") != {"Ref": spec.policy_id}:
            problems.append(
                f"no output {spec.policy_id.replace('QueuePolicy', 'PolicyArn')} with the ARN of {spec.policy_id}"
            )
    return problems


# --- Kubernetes checks --------------------------------------------------------------------------------------

KUBERNETES_SCHEMA_FILES = {
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "ServiceAccount"): "serviceaccount-v1.json",
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("apps/v1", "StatefulSet"): "statefulset-apps-v1.json",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"


@functools.cache
def kubernetes_validators() -> dict[tuple[str, str], Draft202012Validator]:
    definitions = json.loads((KUBERNETES_SCHEMA_DIR / "_definitions.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    return {
        kind: Draft202012Validator(
            json.loads((KUBERNETES_SCHEMA_DIR / name).read_text(encoding="utf-8")), registry=registry
        )
        for kind, name in KUBERNETES_SCHEMA_FILES.items()
    }


def load_manifest(path: Path) -> list[dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document is not None]
    return [as_mapping(document, str(path.relative_to(ROOT))) for document in documents]


def kubernetes_schema_problems(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    for document in documents:
        key = (str(document.get("apiVersion")), str(document.get("kind")))
        name = f"{key[1]}/{document.get('metadata', {}).get('name')}"
        validator = kubernetes_validators().get(key)
        if validator is None:
            problems.append(f"{name}: no vendored schema for {key} (tests/fixtures/kubernetes-json-schema/README.md)")
            continue
        problems += [f"{name}: {error}" for error in schema_errors(validator, document)]
    return problems


@dataclass(frozen=True)
class Manifest:
    """One service's manifest file, split by kind."""

    documents: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [document for document in self.documents if document.get("kind") in kinds]

    def named(self, kind: str, name: object) -> dict[str, Any] | None:
        return next((d for d in self.of_kind(kind) if d.get("metadata", {}).get("name") == name), None)

    @property
    def workload(self) -> dict[str, Any]:
        workloads = self.of_kind(*WORKLOAD_KINDS)
        assert len(workloads) == 1, f"expected one Deployment or StatefulSet, found {len(workloads)}"
        return workloads[0]

    @property
    def pod(self) -> dict[str, Any]:
        return as_mapping(self.workload["spec"]["template"]["spec"], "pod spec")

    def container(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.pod.get("containers", []) if c.get("name") == name), None)


def container_environment(manifest: Manifest, container: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(environment the process sees, where each variable comes from): ConfigMap data, literal values, and
    PLACEHOLDER for a Secret or a field reference, whose values live in the cluster."""
    environment: dict[str, str] = {}
    sources: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        config_map = manifest.named("ConfigMap", name)
        data = (config_map or {}).get("data") or {}
        for key, value in data.items():
            environment[key], sources[key] = str(value), f"ConfigMap {name}"
    for entry in container.get("env", []):
        key = entry["name"]
        if "value" in entry:
            environment[key], sources[key] = str(entry["value"]), "value"
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            reference = entry["valueFrom"]["secretKeyRef"]
            environment[key], sources[key] = PLACEHOLDER, f"secret:{reference.get('name')}/{reference.get('key')}"
        else:
            environment[key], sources[key] = "pod-0", "field"
    return environment, sources


def dockerfile_user(spec: ServiceSpec) -> str:
    stage = final_stage(parse_dockerfile((spec.path / "Dockerfile").read_text(encoding="utf-8")))
    return [instruction.arguments.split(":")[0] for instruction in stage if instruction.keyword == "USER"][-1]


def _port_matches(port: object, container_port: dict[str, Any]) -> bool:
    return port in (container_port.get("name"), container_port.get("containerPort"))


def _probe_problems(container: dict[str, Any], http_port: dict[str, Any], startup_timeout_s: float) -> list[str]:
    problems = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        get = (probe or {}).get("httpGet") or {}
        if get.get("path") != "/healthz" or not _port_matches(get.get("port"), http_port):
            problems.append(f"{kind} is not GET /healthz on the HTTP port {http_port.get('containerPort')}: {probe}")
    startup = container.get("startupProbe") or {}
    window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if window <= startup_timeout_s:
        problems.append(
            f"startupProbe gives up after {window} s, before the service's STARTUP_TIMEOUT_S ({startup_timeout_s} s)"
        )
    return problems


def _pre_stop_s(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if len(command) == 2 and command[0] == "sleep" else 0.0


def _environment_problems(spec: ServiceSpec, environment: Mapping[str, str], sources: Mapping[str, str]) -> list[str]:
    prefix = spec.env_prefix
    problems = setting_name_problems(spec, environment, "env")
    problems += setting_value_problems(spec, environment, "env")
    problems += [
        f"env: {key} is a secret but comes from {sources[key]}, not a Secret"
        for key in environment
        if is_secret(setting_of(spec, key)) and not sources[key].startswith("secret:")
    ]
    # Against the stack's queues: no creation, no endpoint (real SQS), the pod's role rather than keys.
    if environment.get(f"{prefix}QUEUES__BOOTSTRAP") != "false":
        problems.append(f'env: {prefix}QUEUES__BOOTSTRAP must be "false" against the CloudFormation queues')
    problems += [
        f"env: {prefix}{setting} must stay unset in production"
        for setting in ("AWS__ENDPOINT_URL", "AWS__ACCESS_KEY_ID", "AWS__SECRET_ACCESS_KEY")
        if f"{prefix}{setting}" in environment
    ]
    return problems


def _exposure_problems(manifest: Manifest, spec: ServiceSpec, http_port: dict[str, Any]) -> list[str]:
    """The pod's identity (its IAM role) and the Service in front of it."""
    problems = []
    account = manifest.named("ServiceAccount", manifest.pod.get("serviceAccountName"))
    if account is None or ROLE_ANNOTATION not in account.get("metadata", {}).get("annotations", {}):
        problems.append(f"no ServiceAccount with an {ROLE_ANNOTATION} annotation (the role with {spec.policy_id})")

    labels = manifest.workload["spec"]["template"]["metadata"].get("labels", {})
    services = manifest.of_kind("Service")
    if not services:
        problems.append("no Service")
    for service in services:
        selector = service["spec"].get("selector", {})
        if not selector or any(labels.get(key) != value for key, value in selector.items()):
            problems.append(f"Service {service['metadata']['name']} selects {selector}, not the pods {labels}")
        for service_port in service["spec"].get("ports", []):
            if not _port_matches(service_port.get("targetPort", service_port.get("port")), http_port):
                problems.append(f"Service {service['metadata']['name']} targets {service_port}, not the HTTP port")
    return problems


def kubernetes_service_problems(manifest: Manifest, spec: ServiceSpec, queue_prefix: str) -> list[str]:
    """One service's manifest against its Settings, its image and the queue stack."""
    settings = default_settings(spec)
    container = manifest.container(spec.compose_name)
    if container is None:
        return [f"no container named {spec.compose_name}"]
    problems = []
    environment, sources = container_environment(manifest, container)
    problems += [
        f"envFrom names ConfigMap {name!r}, which this file does not define"
        for name in (source.get("configMapRef", {}).get("name") for source in container.get("envFrom", []))
        if manifest.named("ConfigMap", name) is None
    ]
    problems += _environment_problems(spec, environment, sources)
    if environment.get(f"{spec.env_prefix}QUEUES__PREFIX", QueueSettings().prefix) != queue_prefix:
        problems.append(f"env: the queue prefix differs from the stack's Prefix {queue_prefix!r}")

    port = str(environment.get(f"{spec.env_prefix}HTTP__PORT", settings.http.port))
    http_ports = [p for p in container.get("ports", []) if str(p.get("containerPort")) == port]
    if not http_ports:
        return [*problems, f"no containerPort {port} (the service's HTTP port)"]
    problems += _probe_problems(container, http_ports[0], settings.startup_timeout_s)

    grace = manifest.pod.get("terminationGracePeriodSeconds", 30)
    need = shutdown_need_s(spec) + _pre_stop_s(container)
    if grace <= need:
        problems.append(f"terminationGracePeriodSeconds {grace} does not exceed preStop plus shutdown ({need} s)")

    security = manifest.pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True or str(security.get("runAsUser")) != dockerfile_user(spec):
        problems.append(f"the pod must run as non-root uid {dockerfile_user(spec)}, the image's USER: {security}")
    image = str(container.get("image", ""))
    if ":" not in image.rpartition("/")[2] or image.endswith(":latest"):
        problems.append(f"image {image!r} has no fixed tag")

    return problems + _exposure_problems(manifest, spec, http_ports[0])


def kubernetes_state_problems(manifest: Manifest) -> list[str]:
    """The grid's state directory is a per-worker persistent volume: a restarted worker settles its runs from it."""
    container = manifest.container(EXECUTION_GRID.compose_name) or {}
    environment, _ = container_environment(manifest, container)
    state_dir = environment.get("EXECUTION_GRID_STATE_DIR")
    workload = manifest.workload
    claims = {claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])}
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    if workload["kind"] != "StatefulSet" or state_dir is None or mounts.get(state_dir) not in claims:
        return [f"EXECUTION_GRID_STATE_DIR ({state_dir}) is not a StatefulSet volume claim (mounts: {mounts})"]
    return []


def kubernetes_tools_problems(grid: Manifest, coordinator: Manifest) -> list[str]:
    """The grid's agents reach the coordinator's Service for /tools/v1, with a run token secret both share."""
    grid_environment, grid_sources = container_environment(grid, grid.container(EXECUTION_GRID.compose_name) or {})
    _, coordinator_sources = container_environment(coordinator, coordinator.container(COORDINATOR.compose_name) or {})
    problems = []
    url = urlsplit(grid_environment.get("EXECUTION_GRID_TOOLS_URL", ""))
    targets = {
        (service["metadata"]["name"], port["port"])
        for service in coordinator.of_kind("Service")
        for port in service["spec"]["ports"]
    }
    if (url.hostname, url.port) not in targets or url.path not in {"", "/"}:
        problems.append(f"EXECUTION_GRID_TOOLS_URL {url.geturl()!r} is not the coordinator's Service {sorted(targets)}")
    shared = (
        grid_sources.get("EXECUTION_GRID_RUN_TOKEN_SECRET"),
        coordinator_sources.get("COORDINATOR_TOOLS__RUN_TOKEN_SECRET"),
    )
    if shared[0] != shared[1] or not str(shared[0]).startswith("secret:"):
        problems.append(f"the grid and the coordinator must read the run token secret from one Secret key: {shared}")
    return problems


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_PATH)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_yaml(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    return as_mapping(json.loads(COMPOSE_SCHEMA_PATH.read_text(encoding="utf-8")), "compose-spec.json")


@pytest.fixture(scope="module")
def env_example() -> str:
    return ENV_EXAMPLE_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    return {spec.compose_name: Manifest(load_manifest(spec.manifest)) for spec in SERVICES}


def stack_prefix(template: dict[str, Any]) -> str:
    return str(as_mapping(template["Parameters"], "Parameters")["Prefix"]["Default"])


SHUTDOWN_NEED_S = {spec.compose_name: shutdown_need_s(spec) for spec in SERVICES}


def container_port(compose: dict[str, Any], spec: ServiceSpec) -> str:
    service = as_mapping(as_mapping(compose["services"], "services").get(spec.compose_name), spec.compose_name)
    targets = [target for _, _, target in port_mappings(service)]
    assert len(targets) == 1, f"{spec.compose_name}: expected one published port, found {targets}"
    return targets[0]


# --- tests: the real files ---------------------------------------------------------------------------------


def test_compose_structure(compose: dict[str, Any]) -> None:
    problems = compose_structure_problems(compose)
    assert not problems, "\n".join(problems)


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    problems = compose_health_problems(compose)
    assert not problems, "\n".join(problems)


def test_compose_localstack_matches_embedded_broker(compose: dict[str, Any]) -> None:
    problems = localstack_problems(compose, broker_pin())
    assert not problems, "\n".join(problems)


def test_compose_stop_grace_exceeds_shutdown(compose: dict[str, Any]) -> None:
    problems = stop_grace_problems(compose, SHUTDOWN_NEED_S)
    assert not problems, "\n".join(problems)


def test_compose_matches_the_compose_specification(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    problems = compose_schema_problems(compose, compose_schema)
    assert not problems, "\n".join(problems)


def test_compose_variables_are_documented(compose: dict[str, Any], env_example: str) -> None:
    problems = interpolation_problems(compose, env_example)
    assert not problems, "\n".join(problems)


def test_compose_environment_builds_each_services_settings(compose: dict[str, Any]) -> None:
    problems = compose_settings_problems(compose)
    assert not problems, "\n".join(problems)


def test_compose_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    problems = compose_secret_problems(compose)
    assert not problems, "\n".join(problems)


def test_compose_grid_reaches_the_agent_tools(compose: dict[str, Any]) -> None:
    problems = compose_tools_problems(compose)
    assert not problems, "\n".join(problems)


def test_env_example_names_real_settings(env_example: str) -> None:
    problems = env_example_problems(env_example)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.compose_name for spec in SERVICES])
def test_dockerignore_keeps_what_the_image_builds(spec: ServiceSpec) -> None:
    problems = dockerignore_problems(dockerignore_patterns(DOCKERIGNORE_PATH.read_text(encoding="utf-8")), spec)
    assert not problems, "\n".join(problems)


def test_grid_image_installs_the_agent_tools_command() -> None:
    problems = tools_command_problems(workspace_members())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.compose_name for spec in SERVICES])
def test_kubernetes_manifest_matches_the_schemas(spec: ServiceSpec, manifests: dict[str, Manifest]) -> None:
    problems = kubernetes_schema_problems(manifests[spec.compose_name].documents)
    assert not problems, f"{spec.manifest.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.compose_name for spec in SERVICES])
def test_kubernetes_manifest_deploys_the_service(
    spec: ServiceSpec, manifests: dict[str, Manifest], template: dict[str, Any]
) -> None:
    problems = kubernetes_service_problems(manifests[spec.compose_name], spec, stack_prefix(template))
    assert not problems, f"{spec.manifest.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_kubernetes_grid_keeps_its_state(manifests: dict[str, Manifest]) -> None:
    problems = kubernetes_state_problems(manifests["execution-grid"])
    assert not problems, "\n".join(problems)


def test_kubernetes_grid_reaches_the_agent_tools(manifests: dict[str, Manifest]) -> None:
    problems = kubernetes_tools_problems(manifests["execution-grid"], manifests["coordinator"])
    assert not problems, "\n".join(problems)


def test_kubernetes_manifests_are_all_checked() -> None:
    checked = {spec.manifest for spec in SERVICES}
    assert set(KUBERNETES_DIR.glob("*.yaml")) == checked, "a manifest under deploy/kubernetes/ is not checked"


def test_compose_environment_uses_service_prefixes(compose: dict[str, Any]) -> None:
    problems = environment_problems(compose)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.compose_name for spec in SERVICES])
def test_dockerfile(spec: ServiceSpec, compose: dict[str, Any]) -> None:
    dockerfile = spec.path / "Dockerfile"
    assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} is missing"
    port = container_port(compose, spec)
    problems = dockerfile_problems(
        dockerfile.read_text(encoding="utf-8"), spec, read_pyproject(spec.path / "pyproject.toml"), port
    )
    assert not problems, f"{dockerfile.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.compose_name for spec in SERVICES])
def test_compose_healthcheck_probes_the_service_port(spec: ServiceSpec, compose: dict[str, Any]) -> None:
    service = as_mapping(compose["services"][spec.compose_name], spec.compose_name)
    test = " ".join(str(part) for part in service["healthcheck"]["test"])
    port = container_port(compose, spec)
    assert f":{port}/healthz" in test, f"{spec.compose_name}: healthcheck {test!r} does not probe :{port}/healthz"


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file(), ".dockerignore is missing: the build context would include .venv and .git"
    patterns = {line.strip().removeprefix("**/") for line in ignore.read_text(encoding="utf-8").splitlines()}
    missing = {".venv", ".local", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"} - patterns
    assert not missing, f".dockerignore does not exclude {sorted(missing)}"


def test_cloudformation_queues(template: dict[str, Any]) -> None:
    problems = template_problems(template)
    assert not problems, "\n".join(problems)


def test_cloudformation_defaults_match_queue_settings(template: dict[str, Any]) -> None:
    problems = parameter_default_problems(template, QueueSettings())
    assert not problems, "\n".join(problems)


def test_cloudformation_alarms_on_dead_letters(template: dict[str, Any]) -> None:
    problems = template_alarm_problems(template)
    assert not problems, "\n".join(problems)


def test_cloudformation_policies_are_least_privilege(template: dict[str, Any]) -> None:
    problems = template_policy_problems(template)
    assert not problems, "\n".join(problems)


# --- tests: the checks catch what they are for -------------------------------------------------------------


def assert_reported(problems: list[str], expected: str) -> None:
    """A breakage test's verdict: some problem names what was broken."""
    assert any(expected in problem for problem in problems), f"expected a problem with {expected!r}, got {problems}"


def mutated[D](document: D, mutate: Callable[[D], None]) -> D:
    """A deep copy of ``document`` with ``mutate`` applied: the fixture itself stays intact for other tests."""
    broken = copy.deepcopy(document)
    mutate(broken)
    return broken


def dockerfile_problems_with(compose: dict[str, Any], spec: ServiceSpec, text: str) -> list[str]:
    """The Dockerfile checks' problems with ``text`` as ``spec``'s Dockerfile."""
    return dockerfile_problems(text, spec, read_pyproject(spec.path / "pyproject.toml"), container_port(compose, spec))


def _set(path: tuple[str, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


COMPOSE_BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], list[str]], Callable[[dict[str, Any]], None], str]] = [
    ("version", compose_structure_problems, _set(("version",), "3.8"), "version"),
    (
        "dockerfile",
        compose_structure_problems,
        _set(("services", "coordinator", "build", "dockerfile"), "nope"),
        "does not exist",
    ),
    (
        "all-interfaces",
        compose_structure_problems,
        _set(("services", "coordinator", "ports"), ["8002:8002"]),
        "every interface",
    ),
    (
        "no-healthcheck",
        compose_health_problems,
        _set(("services", "sqs", "healthcheck"), {"disable": True}),
        "no healthcheck",
    ),
    (
        "started-only",
        compose_health_problems,
        _set(("services", "coordinator", "depends_on"), {"sqs": {"condition": "service_started"}}),
        "service_healthy",
    ),
    (
        "unknown-target",
        compose_health_problems,
        _set(("services", "coordinator", "depends_on"), {"broker": {"condition": "service_healthy"}}),
        "not a service",
    ),
    (
        "grace",
        lambda document: stop_grace_problems(document, SHUTDOWN_NEED_S),
        _set(("services", "execution-grid", "stop_grace_period"), "45s"),
        "does not exceed",
    ),
    (
        "prefix",
        environment_problems,
        _set(("services", "coordinator", "environment", "ISSUE_TRACKER_X"), "1"),
        "neither COORDINATOR_",
    ),
    (
        "disagree",
        environment_problems,
        _set(("services", "coordinator", "environment", "COORDINATOR_QUEUES__PREFIX"), "other"),
        "disagree",
    ),
    (
        "localstack",
        lambda document: localstack_problems(document, broker_pin()),
        _set(("services", "sqs", "image"), "localstack/localstack:latest"),
        "does not match",
    ),
]


@pytest.mark.parametrize(
    ("check", "mutate", "expected"),
    [breakage[1:] for breakage in COMPOSE_BREAKAGES],
    ids=[breakage[0] for breakage in COMPOSE_BREAKAGES],
)
def test_compose_checks_detect_breakage(
    compose: dict[str, Any],
    check: Callable[[dict[str, Any]], list[str]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    problems = check(mutated(compose, mutate))
    assert_reported(problems, expected)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "runs as root"),
        ("--package agent-grid-coordinator\n\n# 2.", "--package agent-grid-cordinator\n\n# 2.", "pyproject says"),
        ('CMD ["agent-grid-coordinator"]', 'CMD ["coordinator"]', "not a [project.scripts] entry"),
        ("EXPOSE 8002", "EXPOSE 8080", "differs from the compose container port"),
        ("COPY libs/cli/pyproject.toml libs/cli/\n", "", "libs/cli/pyproject.toml is not copied"),
        ("--no-install-workspace ", "", "lacks --no-install-workspace"),
        ("COORDINATOR_HTTP__HOST=0.0.0.0", "COORDINATOR_HTTP__HOST=127.0.0.1", "listen on loopback"),
    ],
    ids=["root", "package", "script", "expose", "member", "layers", "host"],
)
def test_dockerfile_check_detects_breakage(compose: dict[str, Any], old: str, new: str, expected: str) -> None:
    spec = SERVICES[1]
    text = (spec.path / "Dockerfile").read_text(encoding="utf-8")
    assert old in text, f"the fixture text {old!r} is gone from the coordinator Dockerfile; update this test"
    problems = dockerfile_problems_with(compose, spec, text.replace(old, new, 1))
    assert_reported(problems, expected)


def test_template_check_detects_crossed_redrive(template: dict[str, Any]) -> None:
    broken = copy.deepcopy(template)
    broken["Resources"]["NudgesQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] = {
        "Fn::GetAtt": ["LaunchesDeadLetterQueue", "Arn"]
    }
    problems = template_problems(broken)
    assert any("does not target its own DLQ" in problem for problem in problems), problems


def test_template_check_detects_missing_queue(template: dict[str, Any]) -> None:
    broken = copy.deepcopy(template)
    del broken["Resources"]["LifecycleDeadLetterQueue"]
    problems = template_problems(broken)
    assert any("expected 6 queues" in problem for problem in problems), problems
    assert any("undeclared 'LifecycleDeadLetterQueue'" in problem for problem in problems), problems


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1m30s", 90.0), ("1500ms", 1.5), ("1h", 3600.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "s", "30 s", "-5s", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Compose duration"):
        parse_duration_s(text)


def test_compose_keeps_state_outside_the_read_only_images(compose: dict[str, Any]) -> None:
    # The images' /app is read-only to the service user: a SQLite default there would crash at start.
    environments = {name: environment_of(body) for name, body in built_services(compose).items()}
    stateful = {
        ("issue-tracker", "ISSUE_TRACKER_WEBHOOK__DELIVERIES_URL"): "postgresql://",
        ("coordinator", "COORDINATOR_LEDGER_URL"): "postgresql+asyncpg://",
    }
    for (service, key), scheme in stateful.items():
        value = environments[service].get(key, "")
        assert value.startswith(scheme), f"{service}: {key} is {value!r}, not a {scheme} database"
        assert "@postgres:" in value, f"{service}: {key} does not name the compose postgres service"


def test_the_grid_keeps_its_run_state_on_a_volume(compose: dict[str, Any]) -> None:
    # A restarted worker settles what it left running from its run records; on the image's own filesystem
    # they would vanish with the container (and /app is read-only to the service user anyway).
    grid = built_services(compose)["execution-grid"]
    state_dir = environment_of(grid).get("EXECUTION_GRID_STATE_DIR")
    assert state_dir, "execution-grid: EXECUTION_GRID_STATE_DIR is not set"
    mounts = [str(volume).split(":") for volume in grid.get("volumes", [])]
    assert any(target == state_dir and source in compose.get("volumes", {}) for source, target, *_ in mounts), (
        f"execution-grid: {state_dir} is not a named volume"
    )


# --- the checks added with the vendored schemas and the Kubernetes manifests catch what they are for ---------


@functools.cache
def _compose_schema() -> dict[str, Any]:
    return as_mapping(json.loads(COMPOSE_SCHEMA_PATH.read_text(encoding="utf-8")), "compose-spec.json")


def _env(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    return _set(("services", service, "environment", key), value)


def _unset_env(service: str, key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        del document["services"][service]["environment"][key]

    return mutate


def _with_env_example(document: dict[str, Any]) -> list[str]:
    return interpolation_problems(document, ENV_EXAMPLE_PATH.read_text(encoding="utf-8"))


def _against_schema(document: dict[str, Any]) -> list[str]:
    return compose_schema_problems(document, _compose_schema())


MORE_COMPOSE_BREAKAGES: list[
    tuple[str, Callable[[dict[str, Any]], list[str]], Callable[[dict[str, Any]], None], str]
] = [
    ("schema-unknown-key", _against_schema, _set(("services", "coordinator", "helthcheck"), {}), "helthcheck"),
    ("schema-type", _against_schema, _set(("services", "sqs", "ports"), "4566:4566"), "is not of type 'array'"),
    (
        "schema-condition",
        _against_schema,
        _set(("services", "coordinator", "depends_on", "sqs", "condition"), "service_ready"),
        "is not one of",
    ),
    (
        "schema-malformed",
        _against_schema,
        _env("coordinator", "COORDINATOR_LOG__LEVEL", "${AGENT GRID}"),
        "interpolation: malformed",
    ),
    (
        "undocumented",
        _with_env_example,
        _env("coordinator", "COORDINATOR_LOG__LEVEL", "${AGENT_GRID_NOWHERE}"),
        "has no default and is not in .env.example",
    ),
    ("malformed", _with_env_example, _env("coordinator", "COORDINATOR_LOG__LEVEL", "${AGENT GRID}"), "malformed"),
    (
        "setting-typo",
        compose_settings_problems,
        _env("coordinator", "COORDINATOR_NUDGE_CONSUMER__MAX_INFLIGHT", "3"),
        "names no field",
    ),
    ("setting-value", compose_settings_problems, _env("execution-grid", "EXECUTION_GRID_SLOTS", "four"), "slots"),
    (
        "setting-default-value",
        compose_settings_problems,
        _env("execution-grid", "EXECUTION_GRID_SLOTS", "${AGENT_GRID_GRID_SLOTS:-0}"),
        "slots",
    ),
    (
        "secret-literal",
        compose_secret_problems,
        _env("coordinator", "COORDINATOR_API__TOKEN", "hunter2"),
        "written into the file",
    ),
    (
        "secret-default",
        compose_secret_problems,
        _env("coordinator", "COORDINATOR_API__TOKEN", "${AGENT_GRID_API_TOKEN:-hunter2}"),
        "defaults to a value",
    ),
    (
        "secret-optional",
        compose_secret_problems,
        _env("coordinator", "COORDINATOR_TOOLS__RUN_TOKEN_SECRET", "${AGENT_GRID_RUN_TOKEN_SECRET:-}"),
        "the grid needs it",
    ),
    (
        "secret-missing",
        compose_secret_problems,
        _unset_env("issue-tracker", "ISSUE_TRACKER_WEBHOOK__SECRET"),
        "ISSUE_TRACKER_WEBHOOK__SECRET is ''",
    ),
    (
        "secret-unshared",
        compose_secret_problems,
        _env("execution-grid", "EXECUTION_GRID_RUN_TOKEN_SECRET", "${AGENT_GRID_OTHER_SECRET:?Variable not set}"),
        "must share the run token secret",
    ),
    (
        "tools-host",
        compose_tools_problems,
        _env("execution-grid", "EXECUTION_GRID_TOOLS_URL", "http://issue-tracker:8002"),
        "does not name the coordinator",
    ),
    (
        "tools-port",
        compose_tools_problems,
        _env("execution-grid", "EXECUTION_GRID_TOOLS_URL", "http://coordinator:8000"),
        "not the coordinator's port",
    ),
    (
        "tools-path",
        compose_tools_problems,
        _env("execution-grid", "EXECUTION_GRID_TOOLS_URL", "http://coordinator:8002/tools/v1"),
        "base URL",
    ),
    ("tools-unset", compose_tools_problems, _unset_env("execution-grid", "EXECUTION_GRID_TOOLS_URL"), "not set"),
]


@pytest.mark.parametrize(
    ("check", "mutate", "expected"),
    [breakage[1:] for breakage in MORE_COMPOSE_BREAKAGES],
    ids=[breakage[0] for breakage in MORE_COMPOSE_BREAKAGES],
)
def test_compose_variable_and_schema_checks_detect_breakage(
    compose: dict[str, Any],
    check: Callable[[dict[str, Any]], list[str]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    problems = check(mutated(compose, mutate))
    assert_reported(problems, expected)


@pytest.mark.parametrize(
    ("old", "new", "check", "expected"),
    [
        ("AGENT_GRID_RUN_TOKEN_SECRET=\n", "", "interpolation", "absent from the compose section"),
        ("# AGENT_GRID_LOG_LEVEL=INFO", "# AGENT_GRID_LOG_LEVEL=INFO\n# AGENT_GRID_UNUSED=1", "interpolation", "never"),
        ("# --- docker compose", "# --- compose", "interpolation", "has no section"),
        ("COORDINATOR_HTTP__PORT=8002", "COORDINATOR_HTTP_PORT=8002", "settings", "names no field"),
        ("# COORDINATOR_POLICY__CAPS__MAX_ACTIVE_RUNS=4", "# COORDINATOR_POLICY__CAP__MAX=4", "settings", "no field"),
    ],
    ids=["required-undocumented", "stale", "no-section", "typo", "commented-typo"],
)
def test_env_example_checks_detect_breakage(
    compose: dict[str, Any], env_example: str, old: str, new: str, check: str, expected: str
) -> None:
    assert old in env_example, f"the fixture text {old!r} is gone from .env.example; update this test"
    broken = env_example.replace(old, new, 1)
    problems = interpolation_problems(compose, broken) if check == "interpolation" else env_example_problems(broken)
    assert_reported(problems, expected)


@pytest.mark.parametrize(
    ("spec", "old", "new", "expected"),
    [
        (COORDINATOR, "COPY libs/tracker/ libs/tracker/\n", "", "libs/tracker/ (agent-grid-tracker) is not copied"),
        (
            EXECUTION_GRID,
            "COPY libs/agent_tools/ libs/agent_tools/\n",
            "",
            "libs/agent_tools/ (agent-grid-agent-tools)",
        ),
        (
            EXECUTION_GRID,
            "COPY libs/runtime/ libs/runtime/\n",
            "COPY libs/runtime/pyproject.toml libs/runtime/\n",
            "runtime",
        ),
        (COORDINATOR, "COORDINATOR_LOG__FORMAT=json", "COORDINATOR_LOG_FORMAT=json", "names no field"),
    ],
    ids=["coordinator-lib", "grid-agent-tools", "grid-pyproject-only", "env-typo"],
)
def test_dockerfile_member_checks_detect_breakage(
    compose: dict[str, Any], spec: ServiceSpec, old: str, new: str, expected: str
) -> None:
    text = (spec.path / "Dockerfile").read_text(encoding="utf-8")
    assert old in text, f"the fixture text {old!r} is gone from {spec.directory}'s Dockerfile; update this test"
    problems = dockerfile_problems_with(compose, spec, text.replace(old, new, 1))
    assert_reported(problems, expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("libs/agent_tools", "drops libs/agent_tools/pyproject.toml"), ("**/src", "drops"), ("!libs", "'!libs'")],
    ids=["member", "sources", "negation"],
)
def test_dockerignore_check_detects_breakage(extra: str, expected: str) -> None:
    patterns = [*dockerignore_patterns(DOCKERIGNORE_PATH.read_text(encoding="utf-8")), extra]
    problems = dockerignore_problems(patterns, EXECUTION_GRID)
    assert_reported(problems, expected)


def test_tools_command_check_detects_a_grid_without_the_tools() -> None:
    members = workspace_members()
    grid = members["agent-grid-execution-grid"]
    without = tuple(name for name in grid.dependencies if name != "agent-grid-agent-tools")
    broken = {**members, grid.name: Member(grid.name, grid.directory, without, grid.scripts)}
    problems = tools_command_problems(broken)
    assert any("agent-grid-tools" in problem for problem in problems), problems


def _resource(logical_id: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        edit(template["Resources"][logical_id]["Properties"])

    return mutate


def _delete(*path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


TEMPLATE_BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], list[str]], Callable[[dict[str, Any]], None], str]] = [
    (
        "alarm-missing",
        template_alarm_problems,
        _delete("Resources", "LaunchesDeadLetterQueueAlarm"),
        "no alarm on the depth of <Prefix>-launches-dlq",
    ),
    (
        "alarm-threshold",
        template_alarm_problems,
        _resource("ControlDeadLetterQueueAlarm", lambda properties: properties.update(Threshold=10)),
        "not an alarm",
    ),
    (
        "alarm-silent",
        template_alarm_problems,
        _resource("NudgesDeadLetterQueueAlarm", lambda properties: properties.pop("AlarmActions")),
        "no AlarmActions",
    ),
    (
        "policy-excess",
        template_policy_problems,
        _resource(
            "IssueTrackerQueuePolicy",
            lambda properties: properties["PolicyDocument"]["Statement"].append(
                {"Effect": "Allow", "Action": "sqs:*", "Resource": {"Fn::GetAtt": ["NudgesQueue", "Arn"]}}
            ),
        ),
        "grants sqs:* on nudges too",
    ),
    (
        "policy-missing",
        template_policy_problems,
        _resource("CoordinatorQueuePolicy", lambda properties: properties["PolicyDocument"]["Statement"].pop()),
        "lacks sqs:SendMessage on ctl-*",
    ),
    (
        "policy-output",
        template_policy_problems,
        _delete("Outputs", "ExecutionGridPolicyArn"),
        "no output ExecutionGridPolicyArn",
    ),
]


@pytest.mark.parametrize(
    ("check", "mutate", "expected"),
    [breakage[1:] for breakage in TEMPLATE_BREAKAGES],
    ids=[breakage[0] for breakage in TEMPLATE_BREAKAGES],
)
def test_template_checks_detect_breakage(
    template: dict[str, Any],
    check: Callable[[dict[str, Any]], list[str]],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    problems = check(mutated(template, mutate))
    assert_reported(problems, expected)


def _k8s(kind: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(documents: list[dict[str, Any]]) -> None:
        for document in documents:
            if document["kind"] == kind:
                edit(document)

    return mutate


def _pod(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda workload: edit(workload["spec"]["template"]["spec"])


def _main(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return _pod(lambda pod: edit(pod["containers"][0]))


def _data(key: str, value: str) -> Callable[[list[dict[str, Any]]], None]:
    return _k8s("ConfigMap", lambda config_map: config_map["data"].update({key: value}))


def _service_check(spec: ServiceSpec) -> Callable[[dict[str, Manifest]], list[str]]:
    return lambda manifests: kubernetes_service_problems(
        manifests[spec.compose_name], spec, stack_prefix(load_yaml(TEMPLATE_PATH))
    )


def _schema_check(spec: ServiceSpec) -> Callable[[dict[str, Manifest]], list[str]]:
    return lambda manifests: kubernetes_schema_problems(manifests[spec.compose_name].documents)


def _state_check(manifests: dict[str, Manifest]) -> list[str]:
    return kubernetes_state_problems(manifests["execution-grid"])


def _tools_check(manifests: dict[str, Manifest]) -> list[str]:
    return kubernetes_tools_problems(manifests["execution-grid"], manifests["coordinator"])


def _probe(kind: str, key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda container: container[kind].update({key: value})


COORDINATOR_CHECK = _service_check(COORDINATOR)
GRID_CHECK = _service_check(EXECUTION_GRID)
KUBERNETES_BREAKAGES: list[
    tuple[str, ServiceSpec, Callable[[list[dict[str, Any]]], None], Callable[[dict[str, Manifest]], list[str]], str]
] = [
    (
        "schema-unknown-field",
        COORDINATOR,
        _k8s("Deployment", _main(lambda c: c["livenessProbe"]["httpGet"].update(paht="/healthz"))),
        _schema_check(COORDINATOR),
        "paht",
    ),
    (
        "schema-type",
        COORDINATOR,
        _k8s("Deployment", lambda d: d["spec"].update(replicas="two")),
        _schema_check(COORDINATOR),
        "is not of type",
    ),
    (
        "schema-kind",
        ISSUE_TRACKER,
        lambda docs: docs.append({"apiVersion": "v1", "kind": "Pod"}),
        _schema_check(ISSUE_TRACKER),
        "no vendored schema",
    ),
    ("bootstrap", COORDINATOR, _data("COORDINATOR_QUEUES__BOOTSTRAP", "true"), COORDINATOR_CHECK, 'must be "false"'),
    ("typo", COORDINATOR, _data("COORDINATOR_QUEUES__PREFX", "agent-grid"), COORDINATOR_CHECK, "names no field"),
    ("value", EXECUTION_GRID, _data("EXECUTION_GRID_SLOTS", "0"), GRID_CHECK, "slots"),
    (
        "secret-in-configmap",
        COORDINATOR,
        _data("COORDINATOR_GITHUB__APP__PRIVATE_KEY", "a" * 20),
        COORDINATOR_CHECK,
        "comes from ConfigMap",
    ),
    (
        "endpoint",
        COORDINATOR,
        _data("COORDINATOR_AWS__ENDPOINT_URL", "http://sqs:4566"),
        COORDINATOR_CHECK,
        "must stay unset",
    ),
    ("prefix", COORDINATOR, _data("COORDINATOR_QUEUES__PREFIX", "other"), COORDINATOR_CHECK, "stack's Prefix"),
    (
        "configmap-name",
        COORDINATOR,
        _k8s("Deployment", _main(lambda c: c["envFrom"][0]["configMapRef"].update(name="nope"))),
        COORDINATOR_CHECK,
        "does not define",
    ),
    (
        "port",
        COORDINATOR,
        _k8s("Deployment", _main(lambda c: c["ports"][0].update(containerPort=8080))),
        COORDINATOR_CHECK,
        "no containerPort 8002",
    ),
    (
        "probe-path",
        COORDINATOR,
        _k8s("Deployment", _main(lambda c: c["readinessProbe"]["httpGet"].update(path="/metrics"))),
        COORDINATOR_CHECK,
        "readinessProbe is not GET /healthz",
    ),
    (
        "startup-window",
        COORDINATOR,
        _k8s("Deployment", _main(_probe("startupProbe", "failureThreshold", 10))),
        COORDINATOR_CHECK,
        "startupProbe gives up",
    ),
    (
        "grace",
        COORDINATOR,
        _k8s("Deployment", _pod(lambda pod: pod.update(terminationGracePeriodSeconds=25))),
        COORDINATOR_CHECK,
        "does not exceed",
    ),
    (
        "grid-grace",
        EXECUTION_GRID,
        _k8s("StatefulSet", _pod(lambda pod: pod.update(terminationGracePeriodSeconds=60))),
        GRID_CHECK,
        "does not exceed",
    ),
    (
        "root",
        COORDINATOR,
        _k8s("Deployment", _pod(lambda pod: pod["securityContext"].update(runAsUser=0))),
        COORDINATOR_CHECK,
        "non-root uid 10001",
    ),
    (
        "latest",
        COORDINATOR,
        _k8s("Deployment", _main(lambda c: c.update(image="registry.example.com/agent-grid/coordinator:latest"))),
        COORDINATOR_CHECK,
        "no fixed tag",
    ),
    (
        "role",
        COORDINATOR,
        _k8s("ServiceAccount", lambda account: account["metadata"].pop("annotations")),
        COORDINATOR_CHECK,
        "no ServiceAccount",
    ),
    (
        "selector",
        COORDINATOR,
        _k8s("Service", lambda service: service["spec"]["selector"].update({"app.kubernetes.io/name": "grid"})),
        COORDINATOR_CHECK,
        "selects",
    ),
    (
        "target-port",
        COORDINATOR,
        _k8s("Service", lambda service: service["spec"]["ports"][0].update(targetPort=9999)),
        COORDINATOR_CHECK,
        "targets",
    ),
    (
        "state-mount",
        EXECUTION_GRID,
        _k8s("StatefulSet", _main(lambda c: c["volumeMounts"][0].update(mountPath="/data"))),
        _state_check,
        "not a StatefulSet volume claim",
    ),
    (
        "tools-url",
        EXECUTION_GRID,
        _data("EXECUTION_GRID_TOOLS_URL", "http://coordinator:8002"),
        _tools_check,
        "Service",
    ),
    (
        "tools-secret",
        EXECUTION_GRID,
        _k8s(
            "StatefulSet",
            _main(
                lambda c: next(e for e in c["env"] if e["name"] == "EXECUTION_GRID_RUN_TOKEN_SECRET")["valueFrom"][
                    "secretKeyRef"
                ].update(name="agent-grid-execution-grid")
            ),
        ),
        _tools_check,
        "one Secret key",
    ),
]


@pytest.mark.parametrize(
    ("spec", "mutate", "check", "expected"),
    [breakage[1:] for breakage in KUBERNETES_BREAKAGES],
    ids=[breakage[0] for breakage in KUBERNETES_BREAKAGES],
)
def test_kubernetes_checks_detect_breakage(
    manifests: dict[str, Manifest],
    spec: ServiceSpec,
    mutate: Callable[[list[dict[str, Any]]], None],
    check: Callable[[dict[str, Manifest]], list[str]],
    expected: str,
) -> None:
    documents = mutated(manifests[spec.compose_name].documents, mutate)
    problems = check({**manifests, spec.compose_name: Manifest(documents)})
    assert_reported(problems, expected)


@pytest.mark.parametrize(
    ("text", "environment", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:+y}", {"A": "1"}, "y"),
        ("$A and $$A", {"A": "1"}, "1 and $A"),
        ("${A:?missing}", {"A": "v"}, "v"),
    ],
)
def test_interpolate(text: str, environment: dict[str, str], expected: str) -> None:
    assert interpolate(text, environment) == expected


def test_interpolate_refuses_a_missing_required_variable() -> None:
    with pytest.raises(ValueError, match="A: Variable not set"):
        interpolate("${A:?Variable not set}", {"A": ""})


@pytest.mark.parametrize(
    ("variable", "known"),
    [
        ("COORDINATOR_TOOLS__RUN_TOKEN_SECRET", True),
        ("COORDINATOR_POLICY__CAPS__MAX_ACTIVE_RUNS", True),
        ("COORDINATOR_GITHUB__APP__APP_ID", True),
        ("EXECUTION_GRID_AGENTS__CODEX__API_KEY", True),
        ("EXECUTION_GRID_AGENTS__CODEX__API_KEYS", False),
        ("COORDINATOR_HTTP__PORT__X", False),
        ("COORDINATOR_TOOLS_URL", False),
    ],
)
def test_setting_of(variable: str, known: bool) -> None:
    spec = COORDINATOR if variable.startswith("COORDINATOR_") else EXECUTION_GRID
    assert (setting_of(spec, variable) is not None) == known

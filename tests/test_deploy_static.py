"""Static checks of the deployment files: docker-compose.yml, services/*/Dockerfile, deploy/aws/*.yaml.

No Docker engine or AWS account is needed: the files are parsed and compared with each other and with the
code they deploy (pyproject scripts, QueueSettings defaults, the broker pin). Each check returns a list of
problems; the ``*_detects_*`` tests feed it a broken copy to prove the check can fail.
"""

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from agent_grid_runtime.public_queues import QueueName
from agent_grid_runtime.public_settings import ConsumerSettings, QueueSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = ROOT / "docker-compose.yml"
TEMPLATE_PATH = ROOT / "deploy" / "aws" / "queues.cloudformation.yaml"
BROKER_REQUIREMENTS_PATH = ROOT / "deploy" / "broker" / "requirements.txt"
LOCALSTACK_IMAGE = "localstack/localstack"


@dataclass(frozen=True)
class ServiceSpec:
    compose_name: str
    directory: str
    env_prefix: str

    @property
    def path(self) -> Path:
        return ROOT / "services" / self.directory


SERVICES = (
    ServiceSpec("issue-tracker", "issue_tracker", "ISSUE_TRACKER_"),
    ServiceSpec("coordinator", "coordinator", "COORDINATOR_"),
    ServiceSpec("execution-grid", "execution_grid", "EXECUTION_GRID_"),
)
PREFIX_BY_COMPOSE_NAME = {spec.compose_name: spec.env_prefix for spec in SERVICES}


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
    before_last = copied_sources(instructions[: instructions.index(syncs[-1][0])])
    problems += [
        f"{source}/ is not copied before the last uv sync"
        for source in ("libs", f"services/{spec.directory}")
        if source not in before_last
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


def stop_grace_problems(compose: dict[str, Any], drain_timeout_s: float) -> list[str]:
    problems = []
    for name, body in built_services(compose).items():
        raw = body.get("stop_grace_period")
        if raw is None:
            problems.append(f"{name}: no stop_grace_period (the default 10 s cuts the {drain_timeout_s} s drain)")
            continue
        try:
            grace_s = parse_duration_s(str(raw))
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        if grace_s <= drain_timeout_s:
            problems.append(f"{name}: stop_grace_period {raw} does not exceed drain_timeout_s {drain_timeout_s}")
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


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_PATH)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_yaml(TEMPLATE_PATH)


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


def test_compose_stop_grace_exceeds_drain(compose: dict[str, Any]) -> None:
    problems = stop_grace_problems(compose, ConsumerSettings().drain_timeout_s)
    assert not problems, "\n".join(problems)


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


# --- tests: the checks catch what they are for -------------------------------------------------------------


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
        lambda document: stop_grace_problems(document, 20.0),
        _set(("services", "execution-grid", "stop_grace_period"), "15s"),
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
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = check(broken)
    assert any(expected in problem for problem in problems), f"expected a problem with {expected!r}, got {problems}"


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
    problems = dockerfile_problems(
        text.replace(old, new, 1), spec, read_pyproject(spec.path / "pyproject.toml"), container_port(compose, spec)
    )
    assert any(expected in problem for problem in problems), f"expected a problem with {expected!r}, got {problems}"


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

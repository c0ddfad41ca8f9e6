"""The module boundaries, enforced (STYLE.md L1, P1, P3):

- a package imports another package only through its ``public_*`` files;
- inside a package, a module (a sub-package such as ``coordinator/budget/``) imports another module only
  through its ``public_*`` files; the package's root-level files (``app.py``, ``settings.py``) are shared;
- a service never imports another service, and a lib never imports a service;
- a package's own tests may reach into it; other packages' tests obey the rules above.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[1]
LIBS = {
    "agent_grid_contracts",
    "agent_grid_runtime",
    "agent_grid_cli",
    "agent_grid_tracker",
    "agent_grid_github_test_server",
    "agent_grid_tools",
}
SERVICES = {"issue_tracker", "coordinator", "execution_grid"}
PACKAGES = LIBS | SERVICES
ROOT = ""  # the package's root-level files


@dataclass(frozen=True)
class Importer:
    package: str | None  # None for repo-level tests
    module: str = ROOT
    is_test: bool = False


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}: {self.rule}"


def imported_modules(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import public_x` imports a file; `from pkg.public_x import Name` imports from one.
            files = [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("public_")]
            found.extend((node.lineno, target) for target in files or [node.module])
    return found


def violation_of(imported: str, importer: Importer) -> str | None:
    parts = imported.split(".")
    package = parts[0]
    if package not in PACKAGES:
        return None
    is_public = parts[-1].startswith("public_")
    module = parts[1] if len(parts) >= 3 else ROOT
    if package == importer.package:
        if importer.is_test or module in (ROOT, importer.module) or is_public:
            return None
        return "another module's private file (import its public_* file)"
    if package in SERVICES and importer.package in SERVICES:
        return "a service never imports another service"
    if package in SERVICES and importer.package in LIBS:
        return "a lib never imports a service"
    if package in SERVICES and importer.is_test and importer.package is None:
        return None  # repo-level tests drive services through their entry points and composition roots
    if not is_public:
        return "another package's non-public file (import its public_* file)"
    return None


def check(source: str, display: str, importer: Importer) -> list[Violation]:
    return [
        Violation(display, line, imported, rule)
        for line, imported in imported_modules(source)
        if (rule := violation_of(imported, importer)) is not None
    ]


def importer_of(path: Path) -> Importer:
    relative = path.relative_to(REPO_ROOT).parts
    if relative[0] == "tests":
        return Importer(package=None, is_test=True)
    member_dir = REPO_ROOT / relative[0] / relative[1]
    package = next(p.name for p in (member_dir / "src").iterdir() if p.is_dir())
    if relative[2] != "src":
        return Importer(package=package, is_test=True)
    inner = relative[4:]  # after src/<package>/
    return Importer(package=package, module=inner[0] if len(inner) > 1 else ROOT)


def python_files() -> list[Path]:
    found = [
        *REPO_ROOT.glob("libs/*/src/**/*.py"),
        *REPO_ROOT.glob("services/*/src/**/*.py"),
        *REPO_ROOT.glob("libs/*/tests/**/*.py"),
        *REPO_ROOT.glob("services/*/tests/**/*.py"),
        *REPO_ROOT.glob("libs/*/benchmarks/**/*.py"),
        *REPO_ROOT.glob("tests/**/*.py"),
    ]
    return sorted(found)


def test_every_package_is_known_to_the_checker() -> None:
    on_disk = {p.name for p in REPO_ROOT.glob("*/*/src/*") if p.is_dir() and not p.name.endswith(".egg-info")}
    assert on_disk == PACKAGES


def test_no_file_imports_across_a_boundary_except_through_public_files() -> None:
    files = python_files()
    violations = [
        violation
        for path in files
        for violation in check(path.read_text(), str(path.relative_to(REPO_ROOT)), importer_of(path))
    ]
    assert len(files) > 30
    assert not violations, "\n".join(map(str, violations))


@pytest.mark.parametrize(
    ("source", "importer", "expected_rule"),
    [
        ("from coordinator.app import create_app", Importer("issue_tracker"), "service never imports another service"),
        ("import execution_grid.worker", Importer("coordinator", is_test=True), "service never imports another"),
        ("from coordinator.app import create_app", Importer("agent_grid_runtime"), "lib never imports a service"),
        ("from agent_grid_runtime.consumer_loop import Consumer", Importer("coordinator"), "non-public file"),
        ("import agent_grid_runtime.sqs_transport", Importer("agent_grid_cli"), "non-public file"),
        ("from agent_grid_contracts.base import FrozenModel", Importer(None, is_test=True), "non-public file"),
        ("from coordinator.budget.rules import cap", Importer("coordinator", module="launches"), "module's private"),
        ("from coordinator.budget.rules import cap", Importer("coordinator"), "module's private"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(source: str, importer: Importer, expected_rule: str) -> None:
    [violation] = check(source, "offender.py", importer)

    assert expected_rule in violation.rule


@pytest.mark.parametrize(
    ("source", "importer"),
    [
        ("from agent_grid_runtime.public_sqs import Consumer", Importer("coordinator")),
        ("from agent_grid_runtime import public_sqs", Importer("coordinator")),
        ("from coordinator.budget.public_api import cap", Importer("coordinator", module="launches")),
        ("from coordinator.settings import Settings", Importer("coordinator", module="budget")),
        ("from coordinator.budget.rules import cap", Importer("coordinator", module="budget")),
        ("from coordinator.budget.rules import cap", Importer("coordinator", is_test=True)),
        ("from coordinator.app import create_app", Importer(None, is_test=True)),
        ("import structlog", Importer("coordinator")),
    ],
)
def test_the_checker_allows_public_and_internal_imports(source: str, importer: Importer) -> None:
    assert check(source, "fine.py", importer) == []

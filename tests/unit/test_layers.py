"""The layering rules of docs/architecture.md, read from the package's imports (AST, every
import including the ones inside functions; those under ``if TYPE_CHECKING:`` are types only and
left out). Import direction is one way: domain and services, then adapters, then the wiring,
then the entry points (CLI, web, server)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "waypost"

# the outermost ring: what a person or a process starts
ENTRY_POINTS = ("waypost.cli", "waypost.server", "waypost.web", "waypost.demo", "waypost.__main__", "waypost.aws")
WIRING = ("waypost.runtime", "waypost.intake_wiring")
# adapters that may use a framework or an SDK, each only its own
ADAPTER_LIBRARIES = {
    "aiosmtpd": ("waypost.ingress",),
    "boto3": ("waypost.outbound.senders.ses", "waypost.feedback.ses_sync", "waypost.feedback.sqs",
              "waypost.doctor.ses", "waypost.ingress.ses", "waypost.store.s3blobs"),
    "botocore": ("waypost.outbound.senders.ses", "waypost.feedback.ses_sync", "waypost.feedback.sqs",
                 "waypost.doctor.ses", "waypost.ingress.ses", "waypost.store.s3blobs"),
    "starlette": ("waypost.web",),
    "uvicorn": ("waypost.server",),
}
# the web face and the CLI go through domain operations, never the tables
PERSISTENCE = ("waypost.store.models", "sqlalchemy")
FRONT_ENDS = ("waypost.cli", "waypost.web")
# the innermost packages take their own settings protocol or plain values
CONFIG = ("waypost.config",)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports, as a dotted name
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _type_only(tree: ast.Module) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for inner in ast.walk(node))
    return hidden


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the importing module's package upwards
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports() -> Iterator[Import]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hidden = _type_only(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            for target in _targets(node, module, path.name == "__init__.py"):
                yield Import(module, target, getattr(node, "lineno", 0))


ALL = list(imports())


def _broken(rule: str, found: list[Import]) -> str:
    return f"{rule}:\n" + "\n".join(f"  {i.module}:{i.line} imports {i.target}" for i in found)


def test_the_reader_sees_the_package() -> None:
    assert len({i.module for i in ALL}) > 80 and any(i.target == "sqlalchemy" for i in ALL)


def test_nothing_but_an_entry_point_imports_an_entry_point_or_the_wiring() -> None:
    outer = ENTRY_POINTS + WIRING
    found = [i for i in ALL if _within(i.target, outer) and not _within(i.module, outer)]
    assert not found, _broken("the core imports the wiring or an entry point", found)


def test_the_wiring_imports_no_entry_point() -> None:
    found = [i for i in ALL if _within(i.module, WIRING) and _within(i.target, ENTRY_POINTS)]
    assert not found, _broken("runtime imports an entry point", found)


@pytest.mark.parametrize("library", sorted(ADAPTER_LIBRARIES))
def test_a_framework_or_sdk_is_imported_only_by_its_adapter(library: str) -> None:
    allowed = ADAPTER_LIBRARIES[library]
    found = [i for i in ALL if _within(i.target, (library,)) and not _within(i.module, allowed)]
    assert not found, _broken(f"{library} outside {', '.join(allowed)}", found)


def test_the_web_face_and_the_cli_never_touch_the_tables() -> None:
    found = [i for i in ALL if _within(i.module, FRONT_ENDS) and _within(i.target, PERSISTENCE)]
    assert not found, _broken("web or cli imports the tables or sqlalchemy", found)


def test_mail_and_store_take_plain_values_never_the_settings() -> None:
    found = [i for i in ALL if _within(i.module, ("waypost.mail", "waypost.store")) and _within(i.target, CONFIG)]
    assert not found, _broken("mail or store imports the settings module", found)


def _unit(name: str) -> str:
    """The package (waypost.mail) or top-level module (waypost.config) a name belongs to."""
    return ".".join(name.split(".")[:2])


def _real(target: str) -> str | None:
    """The waypost module or package a dotted import names (``from waypost.x import y`` names
    a function y, not a module), or None outside the package."""
    while target.startswith("waypost."):
        path = SRC / target.replace(".", "/")
        if path.with_suffix(".py").exists() or path.is_dir():
            return target
        target = target.rsplit(".", 1)[0]
    return None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            if group:
                found.append(sorted([node, *group]))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_package_imports_another_that_imports_it_back() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in ALL:
        target = _real(i.target)
        if target is not None and _unit(target) != _unit(i.module):
            edges[_unit(i.module)].add(_unit(target))
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The rule above could pass on a finder that finds nothing."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_command_line_loads_no_heavy_library_until_a_command_needs_it() -> None:
    """`waypost --help` answers at once: the settings (pydantic), the database (SQLAlchemy,
    Alembic), images and AWS load only inside the commands that use them."""
    heavy = ("sqlalchemy", "alembic", "pydantic", "numpy", "PIL", "boto3", "starlette", "aiosmtpd")
    probe = f"import sys, waypost.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stdout

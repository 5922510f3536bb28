"""The pure packages import no I/O, no asyncio, no clock (DESIGN.md §1, style rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sluice"
PURE_PACKAGES = ("config", "smtp", "sched", "routing", "bounce", "acct", "message")
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "os",
    "time",
    "random",
    "selectors",
    "subprocess",
    "threading",
    "uvloop",
    "aiohttp",
    "dns",
    "logging",
    "sqlite3",
    "mmap",
    "shutil",
    "pathlib",
    "io",
    "sys",
    "signal",
}
# The acct package is "pure + thin edge": its file writer lives in one named module.
EDGE_EXCEPTIONS = {("acct", "writer.py"), ("acct", "_writer.py")}


def _pure_modules() -> list[Path]:
    out: list[Path] = []
    for pkg in PURE_PACKAGES:
        for path in sorted((SRC / pkg).rglob("*.py")):
            if (pkg, path.name) in EDGE_EXCEPTIONS:
                continue
            out.append(path)
    return out


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_module_imports_nothing_forbidden(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = _imported_roots(tree) & FORBIDDEN
    assert not bad, f"{path.relative_to(SRC)} is pure but imports {sorted(bad)}"


def test_layering_check_catches_a_forbidden_import() -> None:
    tree = ast.parse("import os\nfrom asyncio import sleep\n")
    assert _imported_roots(tree) & FORBIDDEN == {"os", "asyncio"}

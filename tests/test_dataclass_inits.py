"""Dataclasses with a hand-written ``__init__`` keep it in step with their fields.

Some hot frozen dataclasses spell out their ``__init__`` (``object.__setattr__`` per field):
mypyc compiles that into a native constructor, ten times faster than the one ``dataclasses``
generates, which stays interpreted. This test reads the sources and fails when such an
``__init__`` and the fields disagree: a field added, renamed, reordered or given another
default, a field left unset, or ``__post_init__`` not called.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sluice"


def _dataclass_kwargs(cls: ast.ClassDef) -> dict[str, object] | None:
    for deco in cls.decorator_list:
        if isinstance(deco, ast.Name) and deco.id == "dataclass":
            return {}
        if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "dataclass":
            return {k.arg: ast.literal_eval(k.value) for k in deco.keywords if k.arg}
    return None


def _fields(src: str, cls: ast.ClassDef) -> list[tuple[str, str | None]]:
    """(name, default source or None) of each init field, in order."""
    out: list[tuple[str, str | None]] = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if "ClassVar" in (ast.get_source_segment(src, node.annotation) or ""):
            continue
        default: str | None = None
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
            opts = {k.arg: k.value for k in value.keywords}
            if "init" in opts and ast.literal_eval(opts["init"]) is False:
                continue
            if "default" in opts:
                default = ast.get_source_segment(src, opts["default"])
        elif value is not None:
            default = ast.get_source_segment(src, value)
        out.append((node.target.id, default))
    return out


#: Every dataclass under src/ by class name, with its source (for inherited fields).
DATACLASSES: dict[str, tuple[ast.ClassDef, str]] = {}


def _cases() -> list[tuple[str, str, ast.ClassDef, str]]:
    cases = []
    for path in sorted(SRC.rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef) and _dataclass_kwargs(node) is not None:
                DATACLASSES[node.name] = (node, src)
                inits = [n for n in node.body if isinstance(n, ast.FunctionDef)]
                if any(n.name == "__init__" for n in inits):
                    cases.append((str(path.relative_to(SRC)), node.name, node, src))
    return cases


CASES = _cases()


def _all_fields(src: str, cls: ast.ClassDef) -> list[tuple[str, str | None]]:
    """The init fields in dataclass order: those of dataclass bases first, then the own."""
    inherited: list[tuple[str, str | None]] = []
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in DATACLASSES:
            base_cls, base_src = DATACLASSES[base.id]
            inherited += _all_fields(base_src, base_cls)
    own = _fields(src, cls)
    names = {name for name, _ in own}
    return [f for f in inherited if f[0] not in names] + own


def test_some_hot_dataclasses_spell_out_their_init() -> None:
    names = {name for _, name, _, _ in CASES}
    assert {"Reply", "MailFrom", "Transfer", "Envelope", "Result", "DeliveryOutcome"} <= names


@pytest.mark.parametrize(("path", "name", "cls", "src"), CASES, ids=[c[1] for c in CASES])
def test_init_matches_the_fields(path: str, name: str, cls: ast.ClassDef, src: str) -> None:
    kwargs = _dataclass_kwargs(cls)
    assert kwargs is not None
    assert kwargs.get("kw_only") is True, f"{path}: {name} must be kw_only"
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args
    assert [a.arg for a in args.args] == ["self"], f"{name}: arguments must be keyword-only"
    got = [
        (a.arg, None if d is None else ast.get_source_segment(src, d))
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    assert got == _all_fields(src, cls), f"{path}: {name}.__init__ differs from the fields"
    stores = [
        call.args[1].value
        for call in ast.walk(init)
        if isinstance(call, ast.Call)
        and ast.unparse(call.func) == "object.__setattr__"
        and isinstance(call.args[1], ast.Constant)
    ]
    assert stores == [field for field, _ in got], f"{name}: every field set once, in order"
    has_post = any(isinstance(n, ast.FunctionDef) and n.name == "__post_init__" for n in cls.body)
    calls_post = "self.__post_init__()" in ast.unparse(init)
    assert calls_post == has_post, f"{name}: __post_init__ must be called iff defined"

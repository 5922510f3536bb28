"""The ``sluice`` command: parses the command line and dispatches to one module per command.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). Adding a command means adding its module to
``_COMMAND_MODULES``; nothing else changes.

Public names: main, build_kind.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

from sluice._version import __version__

__all__ = ["build_kind", "main"]

#: Command modules, in the order ``sluice --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "sluice.cli.check_config",
    "sluice.cli.explain",
    "sluice.cli.run",
    "sluice.cli.demo",
    "sluice.cli.inject",
)


def build_kind() -> str:
    """How this installation was built: the per-message modules compiled by mypyc (the
    default, see setup.py) or the pure-Python package (``SLUICE_PURE=1``, or no compiler)."""
    spec = importlib.util.find_spec("sluice.smtp._server")
    origin = spec.origin if spec is not None and spec.origin is not None else ""
    return "pure Python" if origin.endswith(".py") else "compiled with mypyc"


def _build_parser(modules: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: a high-volume outbound MTA that reads PowerMTA-style configuration.",
    )
    parser.add_argument(
        "--version", action="version", version=f"sluice {__version__} ({build_kind()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules:
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    modules = [importlib.import_module(name) for name in _COMMAND_MODULES]
    parser = _build_parser(modules)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return 2
    status: int = module.run(args)
    return status

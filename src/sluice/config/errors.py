"""Configuration diagnostics: every problem found in a config file, with file and line.

A load collects every problem instead of stopping at the first; each is a
:class:`Diagnostic` printed as ``file:line: directive: message``. Loading raises
:class:`ConfigError` (a :class:`sluice.errors.ConfigError`) holding all of them when any is an
error; warnings alone ride along on the loaded :class:`~sluice.config.model.Config`.

Public names: Severity, Diagnostic, ConfigError, UnknownQueueError.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from sluice import errors as _errors

__all__ = ["ConfigError", "Diagnostic", "Severity", "UnknownQueueError"]


class Severity(enum.Enum):
    """How bad a diagnostic is."""

    #: The file cannot be used as written; loading fails (exit status 2).
    ERROR = "error"
    #: Legal but suspicious; the file loads and the warning is reported.
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem at one place: ``file:line: directive: message``."""

    file: str
    line: int
    directive: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.directive}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, object]:
        """The stable JSON form used by ``check-config --json``."""
        return {
            "file": self.file,
            "line": self.line,
            "directive": self.directive,
            "message": self.message,
            "severity": self.severity.value,
        }


class ConfigError(_errors.ConfigError):
    """The configuration has errors; ``diagnostics`` holds every error and warning found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.errors) or "configuration error")

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.WARNING)


class UnknownQueueError(ConfigError):
    """A queue was asked for whose virtual MTA the configuration does not define."""

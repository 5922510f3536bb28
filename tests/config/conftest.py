"""Shared helpers for the config tests: an in-memory file tree for injected file access."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import pytest


class FileTree:
    """A dict of path → text standing in for the disk (the loader's read_text and glob)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.reads: list[str] = []

    def read_text(self, path: str) -> str:
        self.reads.append(path)
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.files if fnmatch.fnmatch(p, pattern))


@pytest.fixture
def tree() -> Callable[[dict[str, str]], FileTree]:
    """``tree({path: text})`` builds an in-memory file tree."""
    return FileTree

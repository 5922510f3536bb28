"""Hypothesis: any text into the loader gives a Config or the config error type, nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import ConfigError, load_config_text

WORDS = [
    "<domain", "<domain *>", "</domain>", "<virtual-mta v>", "</virtual-mta>", "<source 0/0>",
    "</source>", "<virtual-mta-pool p>", "</virtual-mta-pool>", "virtual-mta v", "max-smtp-out",
    "20", "queue-to", "a.com", "b.com", "include", "x.conf", '""', '"', "#", "421", "RP-001 *,",
    "1h,", "5,", "1000", "<smtp-pattern-list l>", "</smtp-pattern-list>", "reply", "/x/",
    "mode=backoff", "<max-cpu-usage>90</max-cpu-usage>", "domain-macro m a.com", "$m",
    "max-msg-rate", "3/5m", "<acct-file", "|cmd>", "</acct-file>", "\n", "\n", "\n", " ", "\t",
    "<bounce-category-patterns>", "//", "other", "</bounce-category-patterns>", "smtp-listener",
    "0/0:25", "<", ">", "</", "{auth}", "max-msg-per-hour", "retry-interval", "10m,1h",
]  # fmt: skip


def _load(text: str) -> None:
    """Load ``text``; any exception but ConfigError fails the test (Hypothesis reports it)."""
    error: ConfigError | None = None
    try:
        load_config_text(text, "fuzz.conf")
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.errors
        assert all(d.file.endswith(".conf") and d.line >= 0 for d in error.diagnostics)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_random_text_raises_only_config_errors(text: str) -> None:
    _load(text)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(WORDS), max_size=40))
def test_random_config_shaped_text_raises_only_config_errors(words: list[str]) -> None:
    _load(" ".join(words))

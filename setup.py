"""Build script: compiles Sluice's per-message hot path with mypyc when it can.

The modules listed in ``COMPILED`` are plain, type-checked Python; mypyc turns them into C
extensions (the SMTP engine ran 1.7-1.8x faster compiled, see docs/benchmarks.md). The pure
Python build is the same code and behaves the same: it is what you get with
``SLUICE_PURE=1``, or when no C compiler or Python headers are present.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import setup

#: Compiled modules, relative to src/. A module is listed when it runs for every message;
#: start-up, configuration and tooling code stays interpreted.
COMPILED = [
    "sluice/smtp/",
    "sluice/message/envelope.py",
    "sluice/intake/session.py",
    "sluice/intake/inject.py",
    "sluice/intake/headers.py",
    "sluice/intake/policy.py",
    "sluice/delivery/",
    "sluice/sched/__init__.py",
    "sluice/sched/_feedback.py",
    "sluice/sched/_shaping.py",
    "sluice/sched/_state.py",
    "sluice/sched/actions.py",
    "sluice/sched/backoff.py",
    "sluice/sched/clock.py",
    "sluice/sched/concurrency.py",
    "sluice/sched/cpu.py",
    "sluice/sched/errors.py",
    "sluice/sched/outcome.py",
    "sluice/sched/planner.py",
    "sluice/sched/queues.py",
    "sluice/sched/retry.py",
    "sluice/sched/rules.py",
    "sluice/sched/settings.py",
    "sluice/sched/sources.py",
    "sluice/sched/throttle.py",
    "sluice/sched/warmup.py",
    "sluice/spool/_codec.py",
    "sluice/spool/_front.py",
    "sluice/spool/_groupcommit.py",
    "sluice/spool/_segment_rec.py",
    "sluice/spool/_segment_writer.py",
    "sluice/spool/_segment_index.py",
    "sluice/spool/_sqlbatch.py",
    "sluice/spool/segment.py",
    "sluice/spool/sqlite.py",
    "sluice/daemon/ipc.py",
    "sluice/daemon/lifecycle.py",
    "sluice/daemon/manager.py",
    "sluice/daemon/mapping.py",
    "sluice/daemon/workers.py",
    "sluice/daemon/worker_main.py",
    "sluice/daemon/bodycache.py",
    "sluice/daemon/routing_map.py",
    "sluice/daemon/notices.py",
    "sluice/daemon/outcomes.py",
    "sluice/daemon/system_clock.py",
    "sluice/daemon/wakeup.py",
    "sluice/intake/listener.py",
    "sluice/sched/timeq.py",
    "sluice/acct/records.py",
    "sluice/routing/vmta.py",
]


def _can_compile() -> bool:
    if os.environ.get("SLUICE_PURE", "") not in ("", "0"):
        return False
    include = sysconfig.get_paths().get("include", "")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return bool(shutil.which(compiler)) and (Path(include) / "Python.h").exists()


def _ext_modules() -> list[object]:
    if not _can_compile():
        print("sluice: building the pure-Python package (no compiler, or SLUICE_PURE=1)")
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 (only needed when compiling)

    paths = [f"src/{path}" for path in COMPILED]
    return list(mypycify(paths, opt_level=os.environ.get("SLUICE_OPT_LEVEL", "3")))


setup(ext_modules=_ext_modules())

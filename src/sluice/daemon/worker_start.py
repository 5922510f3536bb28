"""``python -m sluice.daemon.worker_start``: how the queue manager starts an intake worker.

A separate, never-compiled module: ``python -m`` runs a module's Python code, and
:mod:`sluice.daemon.worker_main` may be a compiled extension (mypyc, see setup.py).

Public names: none (run it as a module).
"""

from __future__ import annotations

from sluice.daemon.worker_main import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m sluice`` runs the command line."""

from __future__ import annotations

from sluice.cli.main import main

raise SystemExit(main())

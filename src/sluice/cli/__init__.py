"""sluice.cli: the ``sluice`` command, one module per sub-command (see ``cli.main``).

Commands: ``run``, ``check-config``, ``explain``, ``demo``, ``inject``.
"""

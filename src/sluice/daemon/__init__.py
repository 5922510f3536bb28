"""sluice.daemon: wires the parts for one configuration and owns the one real clock.

Modules: ``lifecycle`` (start-up with recovery before listening, graceful stop),
``manager`` (the qmgr loop carrying out the scheduler's decisions), ``notices``
(accounting records and DSNs), ``mapping`` and
``warmup_map`` (configuration → each part's settings), ``routing_map`` (recipient → queue),
``cpu`` (machine CPU for ``max-cpu-usage``), ``system_clock`` (the real clock).
"""

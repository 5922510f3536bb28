"""sluice.net: network edges (DNS resolution today); thin, and the only place foreign network
exceptions are mapped to Sluice values or errors.

Modules: ``dns`` (dnspython-backed Resolver, caching front, the AttemptPlan DNS driver).
"""

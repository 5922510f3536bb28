"""sluice.routing"""

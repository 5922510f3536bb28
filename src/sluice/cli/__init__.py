"""sluice.cli"""

"""sluice.config"""

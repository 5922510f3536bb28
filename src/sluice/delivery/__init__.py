"""sluice.delivery"""

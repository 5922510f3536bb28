"""sluice.mgmt"""

"""sluice.acct"""

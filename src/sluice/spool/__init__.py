"""sluice.spool"""

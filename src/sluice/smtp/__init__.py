"""sluice.smtp"""

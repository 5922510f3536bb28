"""sluice.intake"""

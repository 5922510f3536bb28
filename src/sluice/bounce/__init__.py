"""sluice.bounce"""

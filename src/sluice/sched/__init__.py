"""sluice.sched"""

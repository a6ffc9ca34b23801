"""Deterministic discrete-event simulation of many core nodes over a simulated network.

Same seed, same numbers: every random choice comes from seeded generators and nothing
iterates over hash-ordered sets.
"""

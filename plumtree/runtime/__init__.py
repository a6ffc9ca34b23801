"""The asyncio runtime: real sockets and timers around the sans-IO cores.

This layer is thin on purpose: the protocol decisions live in :mod:`plumtree.core`.
"""

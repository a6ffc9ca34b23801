"""Plumtree epidemic broadcast trees over SWIM membership.

The protocol lives in :mod:`plumtree.core` (sans-IO, synchronous, time passed in), the
simulator in :mod:`plumtree.sim`, and the asyncio node in :mod:`plumtree.runtime`.
"""

__version__ = "0.1.0"

"""The node's admin HTTP API and /metrics (aiohttp.web, embedded in the node's loop)."""

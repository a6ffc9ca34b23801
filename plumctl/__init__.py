"""plumctl: the operator's command line for plumtree clusters.

Importing this package must stay cheap (shell completion re-runs the CLI on every TAB):
heavy modules (textual, aiohttp, prometheus_client, httpx) are imported inside commands.
"""

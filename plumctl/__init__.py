"""plumctl: the operator's command line for plumtree clusters.

Importing this package must stay cheap (shell completion re-runs the CLI on every TAB):
heavy modules (textual, aiohttp, prometheus_client, httpx) are imported inside commands.
"""

import os as _os

# Plain (click-style) help unless asked otherwise: rendering help through Rich costs
# about 0.3 s of imports, and shell completion re-runs the CLI on every TAB.
# PLUMCTL_RICH_HELP=1 brings the boxed Rich help back.
if not _os.environ.get("PLUMCTL_RICH_HELP"):
    _os.environ.setdefault("TYPER_USE_RICH", "0")

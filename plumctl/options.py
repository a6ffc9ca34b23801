"""Global options shared by every command (``--node``, ``--token``, ``--cacert``, ``-o``,
``--timeout``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

DEFAULT_NODE = "http://127.0.0.1:7947"
#: the protocol presets, as ``plumtree.core.config.PROFILES`` (a test keeps them equal):
#: written out because importing the core would cost every TAB and ``--help``
PROFILES = ("lan", "wan", "local", "large")


def completes(*choices: str) -> Callable[[str], list[str]]:
    """An ``autocompletion`` for an option that takes one of ``choices``: TAB offers
    them (without one, typer offers nothing and bash falls back to file names)."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


TOKEN_HELP = "Bearer token of the nodes (their --token-file)."
CACERT_HELP = "PEM CA certificate(s) to verify https:// nodes with (instead of the system's)."

#: The CA file given with --cacert (None: the system's CAs). Process-wide, like the
#: SSL_CERT_FILE convention: every client plumctl builds verifies with it, however deep
#: in a command it is built.
_ca_file: str | None = None


def use_ca_file(path: str | None) -> None:
    """Verify https:// nodes against ``path`` from now on (None: the system's CAs); a
    usage error if the file is unusable."""
    global _ca_file
    _ca_file = None
    if path is None:
        return
    import ssl

    from plumctl import exitcodes
    from plumctl.output import fail

    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        fail(f"--cacert: {path}: no such file", exitcodes.USAGE)
    except OSError as exc:
        fail(f"--cacert: {path}: {exc.strerror or exc}", exitcodes.USAGE)
    except ssl.SSLError as exc:
        fail(f"--cacert: {path}: no PEM certificate in it ({exc.reason or exc})", exitcodes.USAGE)
    _ca_file = path


def ca_file() -> str | None:
    return _ca_file


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"


@dataclass(slots=True)
class GlobalOptions:
    node: str = DEFAULT_NODE
    token: str | None = None
    cacert: str | None = None
    output: Output = Output.table
    timeout: float = 5.0

    @property
    def json(self) -> bool:
        return self.output == Output.json

    @property
    def wide(self) -> bool:
        return self.output == Output.wide


def with_global_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Let a command also take ``--node/--token/--cacert/-o/--timeout`` after its own name.

    ``plumctl members -o json`` reads better than ``plumctl -o json members``; both
    work. Values given on the command win over the ones given before it (and over the
    environment, which the root callback reads).
    """
    import functools
    import inspect

    import typer

    panel = "Global options"
    extra = [
        inspect.Parameter(
            "_node",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option(
                    "--node",
                    help="Admin URL of any reachable node.",
                    rich_help_panel=panel,
                    show_default=False,
                ),
            ],
        ),
        inspect.Parameter(
            "_token",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option(
                    "--token",
                    help=TOKEN_HELP,
                    rich_help_panel=panel,
                    show_default=False,
                ),
            ],
        ),
        inspect.Parameter(
            "_cacert",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option(
                    "--cacert",
                    metavar="FILE",
                    help=CACERT_HELP,
                    rich_help_panel=panel,
                    show_default=False,
                ),
            ],
        ),
        inspect.Parameter(
            "_output",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Output | None,
                typer.Option(
                    "--output",
                    "-o",
                    help="table, wide or json.",
                    case_sensitive=False,
                    rich_help_panel=panel,
                    show_default=False,
                ),
            ],
        ),
        inspect.Parameter(
            "_timeout",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                float | None,
                typer.Option(
                    "--timeout",
                    min=0.01,
                    help="Seconds to wait for a node.",
                    rich_help_panel=panel,
                    show_default=False,
                ),
            ],
        ),
    ]
    signature = inspect.signature(func, eval_str=True)
    if "ctx" not in signature.parameters:
        raise TypeError(f"{func.__name__}: commands with global options take 'ctx: typer.Context'")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        overrides = {
            "node": kwargs.pop("_node", None),
            "token": kwargs.pop("_token", None),
            "cacert": kwargs.pop("_cacert", None),
            "output": kwargs.pop("_output", None),
            "timeout": kwargs.pop("_timeout", None),
        }
        ctx = kwargs.get("ctx") or next(a for a in args if isinstance(a, typer.Context))
        opts = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
        for key, value in overrides.items():
            if value is not None:
                setattr(opts, key, value.rstrip("/") if key == "node" else value)
        ctx.obj = opts
        if overrides["cacert"] is not None:
            use_ca_file(overrides["cacert"])
        return func(*args, **kwargs)

    extended = signature.replace(parameters=[*signature.parameters.values(), *extra])
    wrapper.__signature__ = extended  # type: ignore[attr-defined]
    # typer reads both the signature and the type hints: give it resolved objects
    wrapper.__annotations__ = {
        p.name: p.annotation for p in extended.parameters.values() if p.annotation is not p.empty
    }
    del wrapper.__wrapped__  # typer must see the extended signature
    return wrapper

"""``python -m plumctl`` and the ``plumctl`` console script."""

from __future__ import annotations


def main() -> None:
    from plumctl.cli import app

    app(prog_name="plumctl")


if __name__ == "__main__":
    main()

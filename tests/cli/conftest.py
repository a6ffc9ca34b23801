"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.threadcluster import ThreadCluster


@pytest.fixture
def three() -> Iterator[ThreadCluster]:
    c = ThreadCluster()
    try:
        c.start(3)
        yield c
    finally:
        c.close()

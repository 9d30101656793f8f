"""Pytest fixtures: ``emulator`` (a fresh ``Emulator`` per test) and ``azurite`` (one real Azurite per session).

Tests that share the session's Azurite isolate themselves with unique queue, container and table names.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.azurite import Azurite
from emulator.core import Emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as instance:
        yield instance

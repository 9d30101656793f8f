"""The ``emulator`` pytest fixture: a fresh, started ``Emulator`` per test, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.core import Emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu

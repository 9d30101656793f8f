"""The chaos suite's world: one emulator and the session's Azurite for every schedule of the module."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from emulator.azurite import Azurite
from emulator.core import Emulator
from tests.chaos.harness import World


@pytest.fixture(scope="module")
def chaos_world(azurite: Azurite) -> Iterator[World]:
    rotation_log = logging.getLogger("rotation")
    propagate = rotation_log.propagate
    # The harness keeps each schedule's WARNING and ERROR records itself (and judges them); passed on to pytest's
    # capture as well, a thousand schedules' records would pile up in memory until the test ends.
    rotation_log.propagate = False
    with Emulator() as emulator:
        world = World.start(emulator, azurite)
        try:
            world.empty_queues()
            yield world
        finally:
            world.empty_queues()
            world.close()
            rotation_log.propagate = propagate

"""The fuzz suite's profiles, its one world, and the counters printed at the end of the session.

``make test`` runs the suite with the ``ci`` profile (loaded here when no ``--hypothesis-profile`` is given): a few
hundred cases per family. ``make fuzz`` passes ``--hypothesis-profile=fuzz``: over 100,000 cases in all. Both print
one counters line per family and a total (``pytest_terminal_summary``), and each family's test fails when any of its
counters (``harness.COUNTERS``) is not zero, listing the shortest inputs that raised it.

The profiles are registered when this file is imported: ``pytest tests/fuzz`` imports it before the Hypothesis plugin
loads the profile named on the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from emulator.azurite import Azurite
from emulator.core import Emulator
from tests.fuzz import profiles
from tests.fuzz.harness import COUNTERS, TALLIES, World

profiles.register()


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("--hypothesis-profile", default=None):
        settings.load_profile(profiles.CI)


@pytest.fixture(scope="session")
def world(azurite: Azurite) -> Iterator[World]:
    """One emulator for every family (each family builds its own app and ledger table on it)."""
    with Emulator() as emulator:
        yield World.create(emulator, azurite)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    terminalreporter.section(f"fuzz counters (hypothesis profile {settings.get_current_profile_name()!r})")
    for family_tally in TALLIES.values():
        terminalreporter.write_line(family_tally.line())
        if family_tally.kinds:
            ended = ", ".join(f"{kind} {n}" for kind, n in family_tally.kinds.most_common(10))
            terminalreporter.write_line(f"{'':<19}ended: {ended}")
        if family_tally.signatures:
            problems = ", ".join(f"{sig} {n}" for sig, n in family_tally.signatures.most_common())
            terminalreporter.write_line(f"{'':<19}PROBLEMS: {problems}")
    cases = sum(t.cases for t in TALLIES.values())
    seconds = sum(t.seconds for t in TALLIES.values())
    totals = " ".join(f"{name}={sum(t.counts[name] for t in TALLIES.values())}" for name in COUNTERS)
    accepted = sum(t.accepted for t in TALLIES.values())
    rejected = sum(t.rejected for t in TALLIES.values())
    terminalreporter.write_line(
        f"{'total':<18} cases={cases:<6} accepted={accepted:<6} rejected={rejected:<6} {totals} "
        f"time={seconds:.1f}s rate={cases / seconds if seconds else 0:.0f}/s"
    )

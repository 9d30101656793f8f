"""Versions created in the same second: Key Vault's ``created`` has whole seconds, so ties must break the same way
on every run, or accounts would be flipped between two versions."""

from __future__ import annotations

from itertools import permutations

from rotation.model import recency
from rotation.policies import select_target
from tests.unit.factories import DAY, NOW, RENEWAL, version


def test_key_vaults_current_version_wins_a_tie() -> None:
    other = version("ffff", created=NOW - 2 * DAY)
    current = version("aaaa", created=other.created_on, latest=True)
    for order in permutations([other, current]):
        assert select_target(order, NOW, RENEWAL) == current


def test_ties_without_a_current_version_break_on_the_version_id() -> None:
    a = version("aaaa", created=NOW - 2 * DAY)
    b = version("bbbb", created=a.created_on)
    assert max([a, b], key=recency) == b
    assert max([b, a], key=recency) == b


def test_created_on_still_decides_when_it_differs() -> None:
    old = version("zzzz", created=NOW - 3 * DAY, latest=True)
    new = version("aaaa", created=NOW - 2 * DAY)
    assert max([old, new], key=recency) == new

"""A target's rollout: parsed from ROTATION_TARGETS, and the wave of each account (rotation/rollout.py)."""

from __future__ import annotations

import json

import pytest

from rotation.config import Settings
from rotation.errors import ConfigError
from rotation.model import AccountRef, Rollout, Target
from rotation.rollout import waves_of
from tests.unit.factories import KEY, account_ref

ACCOUNTS = tuple(account_ref(f"aoai-{i}") for i in range(1, 8))


def target_of(rollout: object) -> Target:
    item = {"key": KEY.id, "accounts": [a.id for a in ACCOUNTS], "rollout": rollout}
    [target] = Settings.from_env({"ROTATION_TARGETS": json.dumps([item])}).targets
    return target


def test_without_a_rollout_every_account_is_in_one_wave() -> None:
    assert set(waves_of(Target(KEY, ACCOUNTS)).values()) == {1}
    assert target_of(None).rollout is None


def test_the_first_account_is_the_canary_by_default_then_waves_of_the_given_size() -> None:
    target = target_of({"wave_size": 3})

    assert target.rollout == Rollout(canary=(), wave_size=3)
    assert list(waves_of(target).values()) == [1, 2, 2, 2, 3, 3, 3]


def test_named_canaries_go_first_wherever_they_are_listed_and_are_matched_without_case() -> None:
    shouted = ACCOUNTS[4].id.replace("rg-ai", "RG-AI").replace("aoai-5", "AOAI-5")
    target = target_of({"canary": [ACCOUNTS[2].id, shouted], "wave_size": 2})

    assert target.rollout is not None and target.rollout.canary == (ACCOUNTS[2], ACCOUNTS[4])
    waves = waves_of(target)
    assert [a.name for a in ACCOUNTS if waves[a] == 1] == ["aoai-3", "aoai-5"]
    assert [waves[a] for a in ACCOUNTS] == [2, 2, 1, 3, 1, 3, 4]


def test_enrolled_accounts_follow_the_listed_ones() -> None:
    enrolled = AccountRef("00000000-0000-0000-0000-000000000002", "rg-b", "aoai-9")
    target = Target(KEY, (*ACCOUNTS[:3], enrolled), rollout=Rollout(wave_size=2))

    assert waves_of(target)[enrolled] == 3


@pytest.mark.parametrize(
    ("rollout", "says"),
    [
        ([1], "rollout must be an object"),
        ({"waves": 2}, "unknown field(s) 'waves'; allowed: canary, wave_size"),
        ({"wave_size": 0}, "wave_size must be a whole number from 1 to 1000"),
        ({"wave_size": True}, "wave_size must be a whole number"),
        ({"wave_size": "5"}, "wave_size must be a whole number"),
        ({"canary": ACCOUNTS[0].id}, "canary must be a list of account ARM ids"),
        ({"canary": ["not an id"]}, "canary[0]: account id 'not an id' is not a Cognitive Services account id"),
        ({"canary": [ACCOUNTS[0].id.replace("aoai-1", "aoai-99")]}, "is not one of this target's accounts"),
    ],
)
def test_a_bad_rollout_is_refused_naming_the_field(rollout: object, says: str) -> None:
    with pytest.raises(ConfigError, match=r"ROTATION_TARGETS\[0\]\.rollout") as info:
        target_of(rollout)
    assert says in str(info.value)

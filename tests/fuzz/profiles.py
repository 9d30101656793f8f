"""Hypothesis profiles of the fuzz suite and how many cases each family runs under each.

    ci     the default (``make test``): a few hundred cases per family, the same ones in every run (derandomized);
           the whole suite in about 30 s on 2 cores
    fuzz   ``make fuzz`` (``--hypothesis-profile=fuzz``): over 100,000 cases in all, new ones in every run, most of
           them in the cheap families; about 18 minutes on 2 cores (about 100 cases/s)

A family's budget is its ``max_examples``. The budgets are weighted by cost: a rejected event or setting costs well
under a millisecond of app time, an accepted queue message runs a whole reconcile against the emulator, and a CLI
command reads every target. Neither profile changes ``max_examples`` for tests outside this package; both only relax
the deadline and the health checks that a fuzz test with a shared emulator trips by design.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI = "ci"
FUZZ = "fuzz"

_RELAXED = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
    "database": None,
    "print_blob": False,
}

BUDGETS: dict[str, dict[str, int]] = {
    CI: {
        "event_grid": 400,
        "key_events": 600,
        "rotation_requests": 300,
        "rotation_poison": 150,
        "http": 500,
        "settings": 800,
        "cli": 100,
    },
    FUZZ: {
        "event_grid": 15_000,
        "key_events": 25_000,
        "rotation_requests": 10_000,
        "rotation_poison": 5_000,
        "http": 18_000,
        "settings": 27_000,
        "cli": 3_000,
    },
}


def register() -> None:
    settings.register_profile(CI, derandomize=True, **_RELAXED)  # the same cases in every run of make test
    settings.register_profile(FUZZ, **_RELAXED)  # new cases in every run


def budget(family: str) -> int:
    """The number of cases ``family`` runs under the loaded profile (an unknown profile runs the ci budgets)."""
    return BUDGETS.get(settings.get_current_profile_name(), BUDGETS[CI])[family]

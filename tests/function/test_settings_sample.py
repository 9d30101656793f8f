"""Every setting the app reads is in ``local.settings.sample.json`` (with a value the app accepts) and the README."""

from __future__ import annotations

import json
from pathlib import Path

from rotation.config import SETTING_NAMES, Settings

SAMPLE = Path(__file__).resolve().parents[2] / "local.settings.sample.json"


def test_the_sample_names_every_setting_and_the_app_accepts_its_values() -> None:
    values = json.loads(SAMPLE.read_text())["Values"]
    assert set(SETTING_NAMES) <= set(values)
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    settings = Settings.from_env(values)
    assert len(settings.targets) == 1


def test_the_readme_documents_every_setting() -> None:
    readme = (SAMPLE.parent / "README.md").read_text()
    assert [name for name in SETTING_NAMES if f"`{name}`" not in readme] == []

"""Family 6: app settings, fed to ``Settings.from_env`` and, when they pass, to ``RotationApp.build`` (with the
emulator's connection and the counting transport, as ``tests.functional.wiring.build_app`` builds the app).

Each case mutates one to three settings of a valid mapping (the world's: a storage connection string with its
account key, ROTATION_TARGETS, the emulator's topic and its key): every ``ROTATION_*`` setting, ``AZURE_CLIENT_ID``,
``AzureWebJobsStorage`` (a connection string in its many forms, ``UseDevelopmentStorage=true``, a SAS with a planted
``sig=``) and its identity-based forms (``__accountName``, ``__*ServiceUri``, ``__clientId``). A setting is deleted,
blanked, given a targeted edge value (durations at and past their bounds, months, overflow; NCRONTAB oddities; digits
that are not ASCII; URLs with a query, user info, a fragment, a bad port or host; targets with duplicates, bad ids,
deep nesting, over 256 KiB), junk (lone surrogates included, as ``os.environ`` can hold them), or a secret: a planted
one, or the topic key or the account key pasted into the wrong setting.

Refused settings must raise ``ConfigError`` and nothing else; every problem line of it must name a setting the case
changed (for the ``AzureWebJobsStorage__*`` forms, ``AzureWebJobsStorage``); and no secret may appear in it. Accepted
settings build an app without a single request, and their ``repr`` holds no secret either.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.azurite import ACCOUNT_KEY
from rotation.config import SETTING_NAMES, Settings
from rotation.errors import ConfigError
from tests.fuzz.harness import CountingTransport, Observation, Tally, World, check_secrets, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import json_values, junk_text, nested_text, planted, repeated, secret_url, weighted

STORAGE = "AzureWebJobsStorage"
STORAGE_SETTINGS = (
    STORAGE,
    f"{STORAGE}__accountName",
    f"{STORAGE}__blobServiceUri",
    f"{STORAGE}__queueServiceUri",
    f"{STORAGE}__tableServiceUri",
    f"{STORAGE}__clientId",
)
DURATIONS = [
    "P0D",
    "PT0S",
    "-P1D",
    "P1M",
    "P1Y",
    "P1W",
    "P1.5D",
    "P1000000000D",
    "P99999999999999999999D",
    "P3650D",
    "P3651D",
    "P27D",
    "P28D",
    "P30D",
    "P120D",
    "PT20M",
    "PT20M1S",
    "P7D",
    "P7DT1S",
    "PT1H",
    "p30d",
    " P30D ",
    "30",
    "P",
    "PT",
    "P1DT",
    "1e9",
    "PT0.000001S",
]
CRON_TOKENS = ["*", "0", "59", "60", "23", "24", "*/5", "*/0", "1-5", "5-1", "MON", "JAN", "mon-fri", "1,2,3", "?"]
CRON_TOKENS += ["L", "W", "1#2", "999", "-1", "0/1000", "a-b-c", ",", "**"]
CONCURRENCY = ["0", "1", "256", "257", "8", " 8", "+8", "٣", "²", "1e1", "0x10", "-1", "99999999999999999999", "8.0"]
GUIDS = [
    "00000000-0000-0000-0000-000000000001",
    "0000000000000000000000000000000A",
    "{00000000-0000-0000-0000-000000000001}",
]


def targets_values(world: World) -> st.SearchStrategy[str]:
    valid = world.targets
    account = valid[0]["accounts"][0]
    key = valid[0]["key"]
    bad_lists: list[Any] = [
        [],
        {},
        [{}],
        [valid[0], valid[0]],
        [valid[0], {"key": valid[1]["key"], "accounts": [account]}],
        [{**valid[0], "accounts": [account, account]}],
        [{**valid[0], "extra": 1}],
        [{**valid[0], "accounts": []}],
        [{**valid[0], "accounts": [1]}],
        [{**valid[0], "accounts": account}],
        [{**valid[0], "vault_location": ""}],
        [{**valid[0], "vault_location": 1}],
        [{**valid[0], "vault_location": "East US"}],
        [{**valid[0], "key": f"{key}/{world.versions['fuzz-cmk']}"}],
        [{**valid[0], "key": key.replace("https://", "http://")}],
        [{**valid[0], "key": "https://kv..vault.azure.net/keys/k"}],
        [{**valid[0], "key": "https://bücher.vault.azure.net/keys/k"}],
        [{**valid[0], "key": "https://[x/keys/k"}],
        [{**valid[0], "key": "https://a.com:0/keys/k"}],
        [{**valid[0], "key": 1}],
        [{**valid[0], "accounts": [account.replace("00000000-0000-0000-0000-000000000001", "not-a-guid")]}],
        [{**valid[0], "accounts": [account.replace("rg-", "rg.")[:-1] + "."]}],
        [{**valid[0], "accounts": ["/subscriptions/x"]}],
        [1, 2],
        [[valid[0]]],
        ["x"],
        [None],
    ]
    return weighted(
        (4, st.sampled_from(bad_lists).map(json.dumps)),
        (1, secret_url(key).map(lambda url: json.dumps([{**valid[0], "key": url}]))),
        (1, st.builds(lambda a: json.dumps([{**valid[0], "accounts": [a]}]), planted | st.text(max_size=20))),
        (1, nested_text(50_000)),
        (1, repeated(st.just(json.dumps(valid)[1:-1] + ","), 1_000, 3_000).map(lambda text: "[" + text + "1]")),
        (1, st.sampled_from(["1" * 5000, "[1" + "0" * 5000 + "]", "NaN", "\ufeff" + json.dumps(valid), "[1,]"])),
        (1, json_values.map(json.dumps)),
    )


def storage_values(world: World) -> st.SearchStrategy[str]:
    conn = world.env[STORAGE]
    endpoint = conn.split("QueueEndpoint=", 1)[1].split(";", 1)[0]
    return weighted(
        (
            4,
            st.sampled_from(
                [
                    "UseDevelopmentStorage=true",
                    " usedevelopmentstorage = TRUE ",
                    "UseDevelopmentStorage=false",
                    conn.replace(f"AccountKey={ACCOUNT_KEY};", ""),
                    conn.replace(ACCOUNT_KEY, "not base64!"),
                    conn.replace(ACCOUNT_KEY, ""),
                    conn + "Foo=bar;",
                    conn + "NotAField;",
                    conn.replace("DefaultEndpointsProtocol=http", "DefaultEndpointsProtocol=ftp"),
                    conn.replace(endpoint, "http://[x"),
                    conn.replace(endpoint, "ftp://127.0.0.1/devstoreaccount1"),
                    conn.replace(endpoint, endpoint + "?sv=1"),
                    conn.replace(endpoint, "http://127.0.0.1:99999/x"),
                    conn.replace("AccountName=devstoreaccount1;", ""),
                    conn.replace(";", ";;"),
                    conn.lower(),
                    ACCOUNT_KEY,
                    conn * 40,
                    "AccountName=a;AccountKey=",
                    "=",
                    ";",
                ]
            ),
        ),
        (
            1,
            st.sampled_from(["SharedAccessSignature=", "BlobEndpoint=https://a.blob.core.windows.net?"]).flatmap(
                lambda head: planted.map(lambda secret: head + secret)
            ),
        ),
        (1, planted.map(lambda secret: conn.replace(f"AccountKey={ACCOUNT_KEY}", secret))),
        (1, planted.map(lambda secret: conn.replace(endpoint, endpoint + "?" + secret))),
    )


def setting_values(world: World, name: str) -> st.SearchStrategy[str | None]:
    """A value for ``name`` (None deletes it): targeted, junk, a secret, or a secret pasted in the wrong place."""
    topic = world.env["ROTATION_EVENTS_ENDPOINT"]
    targeted: dict[str, st.SearchStrategy[str]] = {
        "ROTATION_TARGETS": targets_values(world),
        "ROTATION_SCHEDULE": st.lists(st.sampled_from(CRON_TOKENS), min_size=0, max_size=8).map(" ".join),
        "ROTATION_CONCURRENCY": st.sampled_from(CONCURRENCY),
        "ROTATION_APP_NAME": st.sampled_from(["a", "a" * 64, "a" * 65, "-a", "a b", "é", "a.b_c-d"]),
        "ROTATION_EVENTS_ENDPOINT": weighted(
            (1, secret_url(topic)),
            (
                2,
                st.sampled_from(
                    [
                        topic.replace("https://", "http://"),
                        topic + "#frag",
                        topic + "?api-version=2018-01-01",
                        "https://",
                        "https://x:0/api/events",
                        "https://[::1]:443/api/events",
                        "https://[::1/api/events",
                        "https://a..b/api/events",
                        "https://" + "a" * 64 + ".com/api/events",
                        "https://bücher.example/api/events",
                        "https://-a.com/api/events",
                        "https://a.com:99999/api/events",
                        topic + " ",
                        "\t" + topic,
                    ]
                ),
            ),
        ),
        "ROTATION_EVENTS_KEY": st.sampled_from(["", "   ", world.env["ROTATION_EVENTS_KEY"] + " "]),
        "AZURE_CLIENT_ID": st.sampled_from(GUIDS),
        "ROTATION_DISCOVERY": st.sampled_from(
            [
                "tenant",
                "OFF",
                f"/subscriptions/{GUIDS[0]}",
                f"/subscriptions/{GUIDS[0]}, /subscriptions/{GUIDS[0].upper()}",
                f"/subscriptions/{GUIDS[0]},",
                GUIDS[0],
                "/subscriptions/",
                "/subscriptions/x",
                "/providers/Microsoft.Management/managementGroups/Prod-1",
                "/providers/Microsoft.Management/managementGroups/",
                "/providers/Microsoft.Management/managementGroups/a b",
                f"/providers/Microsoft.Management/managementGroups/g,/subscriptions/{GUIDS[0]}",
            ]
        ),
        "ROTATION_UNMANAGED": st.sampled_from(["report", "ENROL", "enroll", "ignore", "report,enrol"]),
        "ROTATION_RETIREMENT": st.sampled_from(["off", "OWN", "all", "on", "true", "own,all"]),
        STORAGE: storage_values(world),
        f"{STORAGE}__accountName": st.sampled_from(["rotationstate", "UPPER", "ab", "a" * 25, "a-b", ""]),
        f"{STORAGE}__clientId": st.sampled_from([*GUIDS, "x"]),
    }
    for duration in ("ROTATION_KEY_LIFETIME", "ROTATION_RENEW_BEFORE", "ROTATION_VERIFY_TIMEOUT"):
        targeted[duration] = st.sampled_from(DURATIONS)
    targeted["ROTATION_FORCE_COOLDOWN"] = st.sampled_from(DURATIONS)
    targeted["ROTATION_RETIRE_AFTER"] = st.sampled_from([*DURATIONS, "PT23H", "P1D"])
    for service in ("blob", "queue", "table"):
        url = f"https://rotationstate.{service}.core.windows.net"
        targeted[f"{STORAGE}__{service}ServiceUri"] = weighted(
            (
                2,
                st.sampled_from([url, url + "/", url.replace("https", "http"), "https://", "https://[x", url + "?x=1"]),
            ),
            (1, secret_url(url)),
        )
    pasted = st.sampled_from([world.env["ROTATION_EVENTS_KEY"], ACCOUNT_KEY, world.env[STORAGE]])
    surrogates = st.builds(str.__add__, st.text(max_size=6), st.sampled_from(["\udcff", "\ud800", "\udc80x"]))
    return weighted(
        (5, targeted.get(name, junk_text)),
        (1, st.none()),
        (1, junk_text | surrogates),
        (1, planted),
        (1, pasted),
    )


@st.composite
def environments(draw: st.DrawFn, world: World) -> tuple[dict[str, str], tuple[str, ...]]:
    """A settings mapping and the names the case changed."""
    env = dict(world.env)
    optional = {
        "ROTATION_KEY_LIFETIME": "P120D",
        "ROTATION_RENEW_BEFORE": "P30D",
        "ROTATION_SCHEDULE": "0 0 3 * * *",
        "ROTATION_CONCURRENCY": "8",
        "ROTATION_FORCE_COOLDOWN": "PT1H",
        "ROTATION_APP_NAME": "aoai-cmk-rotation",
        "AZURE_CLIENT_ID": GUIDS[0],
    }
    for name, value in optional.items():
        if draw(st.booleans()):
            env[name] = value
    names = draw(st.lists(st.sampled_from(SETTING_NAMES + STORAGE_SETTINGS), min_size=0, max_size=3, unique=True))
    for name in names:
        value = draw(setting_values(world, name))
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env, tuple(names)


def names_a_changed_setting(line: str, changed: tuple[str, ...]) -> bool:
    return any(name in line or (name.startswith(STORAGE) and STORAGE in line) for name in changed)


def judge_settings(
    family: Tally, world: World, case: Any, seen: Observation, changed: tuple[str, ...], error: BaseException | None
) -> None:
    if error is not None and not isinstance(error, ConfigError):
        family.flag("uncaught", case, f"{type(error).__name__}: {error}", signature=type(error).__name__)
    if isinstance(error, ConfigError):
        message = str(error)
        seen.shown.append(message)
        problems = message.split("\n- ")[1:] if message.startswith("invalid app settings:") else [message]
        unnamed = [line for line in problems if not names_a_changed_setting(line, changed)]
        if unnamed:
            family.flag("unnamed", case, unnamed)
    family.verdict(error is not None)
    if seen.writes():
        family.flag("rejected_writes", case, seen.writes())
    check_secrets(family, world.secrets, case, seen, type(error).__name__ if error is not None else "accepted")


def test_settings(world: World) -> None:
    family = tally("settings")
    transport = CountingTransport()
    with world.capturing():

        @settings(max_examples=budget("settings"))
        @given(case=environments(world))
        def load(case: tuple[dict[str, str], tuple[str, ...]]) -> None:
            env, changed = case
            error: BaseException | None = None
            with world.observe(transport) as seen:
                try:
                    loaded = Settings.from_env(env)
                    seen.shown.append(repr(loaded))
                    app = world.build(ledger_table="fuzzsettings", transport=transport, env=env)
                    seen.shown.append(repr(app.settings))
                    family.kinds["built"] += 1
                except Exception as exc:  # noqa: BLE001 -- counted: anything but ConfigError is a bug
                    error = exc
                    family.kinds[type(exc).__name__] += 1
            judge_settings(family, world, {name: env.get(name) for name in changed}, seen, changed, error)

        load()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()

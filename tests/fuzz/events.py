"""Key Vault events as Event Grid delivers them, in both schemas, valid and mutated: shared by the Event Grid webhook
family (``on_key_event``) and the key-events queue family (``on_queued_key_event``).

A valid event names a key by ``data.Id`` (``https://<vault>/keys/<name>/<version>``), falling back to ``VaultName`` and
``ObjectName`` (``https://<VaultName>.vault.azure.net/keys/<ObjectName>``). The generators pick the key among the
targets (some spelled differently: name case, a trailing slash), keys outside them (in the same vault, in another
vault, a key that does not exist) and URLs that are not key URLs (a secret's, a versionless one, http, with a planted
SAS or password); and then mutate the event's data and, less often, its envelope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, World
from tests.fuzz.strategies import (
    ids_bad,
    ids_valid,
    json_values,
    mutated,
    nested_value,
    planted,
    secret_url,
    versions_bad,
    versions_valid,
    weighted,
)

EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
KEY_EVENT_TYPES = (
    "Microsoft.KeyVault.KeyNearExpiry",
    "Microsoft.KeyVault.KeyExpired",
    "Microsoft.KeyVault.KeyNewVersionCreated",
)
OTHER_EVENT_TYPES = (
    "Microsoft.KeyVault.SecretNearExpiry",
    "Microsoft.KeyVault.CertificateNewVersionCreated",
    "Microsoft.KeyVault.VaultAccessPolicyChanged",
    "microsoft.keyvault.keynearexpiry",
    "Microsoft.KeyVault.KeyNearExpiry.",
    " Microsoft.KeyVault.KeyExpired ",
    "Microsoft.Storage.BlobCreated",
)
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-keys"
    "/providers/Microsoft.KeyVault/vaults/fuzz-kv"
)


def key_names() -> st.SearchStrategy[str]:
    """A target's name (some in another case) in about half the cases, a key outside the targets otherwise."""
    return st.sampled_from([OTHER_KEY, KEY, "missing-cmk", KEY2, OTHER_KEY.upper(), KEY.upper(), "Fuzz-Cmk2", "x"])


def key_ids(world: World, name: str, version: Any) -> st.SearchStrategy[Any]:
    """``data.Id`` for ``name``: versioned (the usual), versionless, with a trailing slash, on another host, not a key
    URL at all, carrying a planted secret, or junk."""
    base = world.key_url(name)
    versioned = f"{base}/{version}" if isinstance(version, str) else base
    host = world.vault.url.removeprefix("https://")
    return weighted(
        (6, st.just(versioned)),
        (
            2,
            st.sampled_from(
                [
                    base,
                    base + "/",
                    versioned.replace("https://", "http://"),
                    versioned.replace("/keys/", "/secrets/"),
                    versioned.replace(host, "localhost:" + host.rsplit(":", 1)[-1]),
                    versioned.replace(host, "fuzz-kv.vault.azure.net"),
                    f"https://[{host}/keys/{name}",
                    f"https://{host}/keys/{name}/{version}/extra",
                    f"https://{host}/keys/",
                    f"https://{host}/keys/{name}%00",
                ]
            ),
        ),
        (1, secret_url(versioned)),
        (1, json_values),
    )


def data_fields(world: World, name: str, version: Any) -> st.SearchStrategy[dict[str, Any]]:
    base = {
        "Id": f"{world.key_url(name)}/{version}",
        "VaultName": "fuzz-kv",
        "ObjectType": "Key",
        "ObjectName": name,
        "Version": version,
        "NBF": 1559081980,
        "EXP": 1559082102,
    }
    targeted = {
        "Id": key_ids(world, name, version),
        "VaultName": st.sampled_from(["", " ", "sample-kv", "fuzz-kv.", "a" * 300, "kv..x", "é"]) | planted,
        "ObjectType": st.sampled_from(["Secret", "Certificate", "key", "KEY", " Key ", "", "Keys"]) | json_values,
        "ObjectName": st.sampled_from(["", " ", "a" * 128, "x/y", "é", "\x00", KEY, OTHER_KEY]) | planted,
        "Version": versions_bad | versions_valid,
        "NBF": st.sampled_from(["1559081980", "", "soon", -1, 10**30]) | json_values,
        "EXP": st.sampled_from(["1559082102", "", "never", -1, 10**30]) | json_values,
    }
    return mutated(base, targeted)


@st.composite
def key_event(draw: st.DrawFn, world: World, schema: str) -> dict[str, Any]:
    """One event in ``schema``: valid, or with its data or envelope mutated."""
    name = draw(key_names())
    known = world.versions.get(name.lower())
    version = known if known is not None and draw(st.booleans()) else draw(versions_valid)
    data: Any = draw(data_fields(world, name, version))
    shape = draw(st.sampled_from(["object"] * 12 + ["junk", "nested", "list", "missing"]))
    if shape == "junk":
        data = draw(json_values)
    elif shape == "nested":
        data = nested_value(data, draw(st.integers(1, 300)))
    elif shape == "list":
        data = [data]
    event_id = draw(weighted((6, ids_valid), (2, ids_bad)))
    event_type = draw(
        weighted(
            (8, st.sampled_from(KEY_EVENT_TYPES)), (1, st.sampled_from(OTHER_EVENT_TYPES)), (1, json_values | planted)
        )
    )
    subject = draw(weighted((6, st.sampled_from([name, f"/keys/{name}"])), (1, json_values | planted)))
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if schema == CLOUD_EVENT_SCHEMA:
        event: dict[str, Any] = {
            "id": event_id,
            "source": TOPIC,
            "subject": subject,
            "type": event_type,
            "time": now,
            "data": data,
            "specversion": "1.0",
        }
    else:
        event = {
            "id": event_id,
            "topic": TOPIC,
            "subject": subject,
            "eventType": event_type,
            "eventTime": now,
            "data": data,
            "dataVersion": "1",
            "metadataVersion": "1",
        }
    if shape == "missing":
        del event["data"]
    envelope = {
        "specversion": st.sampled_from(["1.0", "0.3", "", None]),
        "time": st.sampled_from(["", None, "2019-07-25T01:08:33.1036736Z", "yesterday"]),
        "eventTime": st.sampled_from(["", None, "2019-07-25T01:08:33.1036736Z", "yesterday"]),
        "subject": json_values | planted,
    }
    return draw(mutated(event, envelope, counts=st.sampled_from([0] * 8 + [1, 2])))


def any_schema_event(world: World) -> st.SearchStrategy[dict[str, Any]]:
    return key_event(world, EVENT_GRID_SCHEMA) | key_event(world, CLOUD_EVENT_SCHEMA)

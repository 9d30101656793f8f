"""Families 3 and 4: rotation-requests messages to ``rotation_worker``, and the same messages on the poison queue to
``rotation_poison``.

Each case starts from ``RotationRequest.to_message()`` of a request for a target key (sometimes spelled another way:
the name in upper case, a trailing slash) or for a key outside the targets, and then mutates it:

    fields    a field dropped, retyped, or given a targeted bad value: a key outside the targets or not a key URL (one
              carrying a planted secret), a request id that is empty, long, non-ASCII, NUL or a secret, the id of a
              seeded row of the *other* target key (a forgery), a bad trigger, force or time, a bad event version
    text      cut, spliced, padded past the 4096-byte limit (or to exactly the limit), doubled, nested, a BOM, junk

A valid message for a target key is accepted and runs for real: the worker takes the key's lease, records the row,
reconciles (the keys are not due, so it reads, decides and records "skipped"; a rare ``force`` creates a version and
repoints the account) and publishes the outcome; the poison handler marks the row failed and says so. Those writes
are allowed. A message naming a finished row of the same key is a duplicate: accepted, nothing to do. Everything
else must be refused with one ``rotation.message_rejected`` line and no write.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.model import MAX_MESSAGE_BYTES, KeyRef, RotationRequest, Trigger
from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, SEEDS, World, judge_trigger, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import (
    ids_bad,
    ids_valid,
    json_values,
    junk_text,
    mutated,
    nested_value,
    planted,
    secret_url,
    text_mutation,
    versions_bad,
    versions_valid,
    weighted,
)

TRIGGERS_BAD = st.sampled_from(["keynearexpiry", "KeyNearExpiry ", "", "Timer", "HTTP", "sweep", "KeyDeleted"])
TIMES_BAD = st.sampled_from(
    [
        "2025-01-31T12:00:00",
        "2025-01-31",
        "yesterday",
        "",
        "9999-12-31T23:59:59+23:59",
        "2025-01-31T12:00:00+00:00" + " " * 60,
        "2025-13-01T00:00:00+00:00",
        "0001-01-01T00:00:00-23:59",
        "1700000000",
    ]
)


def key_urls(world: World) -> st.SearchStrategy[str]:
    """Key URLs a message may carry: target keys (some spelled another way), and keys outside the targets."""
    return st.sampled_from(
        [
            world.key_url(KEY),
            world.key_url(KEY),
            world.key_url(KEY2),
            world.key_url(KEY.upper()),
            world.key_url(KEY2) + "/",
            world.key_url(OTHER_KEY),
            world.key_url("missing-cmk"),
            "https://fuzz-kv.vault.azure.net/keys/fuzz-cmk",
        ]
    )


def bad_keys(world: World) -> st.SearchStrategy[Any]:
    versioned = f"{world.key_url(KEY)}/{world.versions[KEY]}"
    return st.one_of(
        st.sampled_from(
            [
                versioned,
                world.key_url(KEY).replace("https://", "http://"),
                world.key_url(KEY).replace("/keys/", "/secrets/"),
                world.key_url(KEY) + "#frag",
                world.key_url("a" * 128),
                world.key_url("é"),
                world.key_url(""),
                "https://kv..vault.azure.net/keys/k",
                "https://[x/keys/k",
                "https://a.com:99999/keys/k",
                "",
                " ",
            ]
        ),
        secret_url(world.key_url(KEY)),
        st.builds(lambda depth: nested_value(world.key_url(KEY), depth), st.integers(1, 300)),
        json_values,
        planted,
    )


@st.composite
def messages(draw: st.DrawFn, world: World) -> str:
    """One message's text: ``to_message()`` of a request, its fields mutated, its text edited, or junk."""
    kind = draw(st.sampled_from(["message"] * 8 + ["limit", "junk"]))
    if kind == "junk":
        return draw(junk_text | json_values.map(json.dumps))
    seeded = [request_id for request_id, _, _ in SEEDS]
    request_id = draw(weighted((1, st.sampled_from(seeded)), (3, st.uuids().map(str)), (1, ids_valid)))
    trigger = draw(st.sampled_from(list(Trigger)))
    request = RotationRequest(
        request_id=request_id,
        key=KeyRef.parse(draw(key_urls(world))),
        trigger=trigger,
        force=draw(st.sampled_from([False] * 99 + [True])),  # a forced rotation creates a version: keep them rare
        requested_at=draw(st.sampled_from([None, datetime.now(UTC)])),
        event_version=draw(st.none() | versions_valid) if trigger is Trigger.KEY_NEW_VERSION_CREATED else None,
    )
    text = request.to_message()
    if kind == "limit":  # whitespace after the object, to exactly the limit or one byte over it
        return text + " " * (MAX_MESSAGE_BYTES - len(text.encode()) + draw(st.sampled_from([0, 1])))
    fields = draw(
        mutated(
            json.loads(text),
            {
                "request_id": st.sampled_from(seeded) | ids_bad,
                "key": bad_keys(world),
                "trigger": TRIGGERS_BAD | json_values | planted,
                "force": st.sampled_from(["true", "false", 1, 0, None, [], {}]),
                "requested_at": TIMES_BAD | json_values | planted,
                "event_version": versions_bad,
            },
        )
    )
    text = json.dumps(
        fields, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])), ensure_ascii=draw(st.booleans())
    )
    if draw(st.sampled_from([False, False, False, True])):
        text = draw(text_mutation(text))
    return text


def run_family(world: World, family_name: str, function: str) -> None:
    family = tally(family_name)
    with world.serving(family_name) as served:

        @settings(max_examples=budget(family_name))
        @given(text=messages(world))
        def deliver(text: str) -> None:
            error: BaseException | None = None
            with world.observe(served.transport) as seen:
                try:
                    served.host.deliver_message(function, text, message_id=str(uuid.uuid4()))
                except Exception as exc:  # noqa: BLE001 -- counted: only Redeliver may leave, and none should
                    error = exc
            judge_trigger(family, world.secrets, text, seen, error)

        deliver()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()


def test_rotation_requests_messages(world: World) -> None:
    run_family(world, "rotation_requests", "rotation_worker")


def test_rotation_poison_messages(world: World) -> None:
    run_family(world, "rotation_poison", "rotation_poison")

"""Families 3 and 4: rotation-requests messages to ``rotation_worker``, and the same messages on the poison queue to
``rotation_poison``.

Each case starts from ``RotationRequest.to_message()`` of a request for a target key (sometimes spelled another way:
the name in upper case, a trailing slash) or for a key outside the targets. About one in ten is a break-glass request
(``force`` true, ``compromised_version`` and ``accept_breakage``) whose version is one the key lacks (random hex) or,
in one of four, one it has (as the emulator's vault lists them now). About one in seven breaks the codec's break-glass
rules instead (``compromised_version`` and ``accept_breakage`` come together, or neither; the version is 32 hex
digits, never null; ``accept_breakage`` is true or false; a break-glass request is forced): one of the two fields
alone, a null or bad version, a non-boolean ``accept_breakage``, or ``force`` false. Then the message is mutated (a
break-glass case is left as it was made in three of five, so that its answer can be predicted exactly):

    fields    a field dropped, retyped, or given a targeted bad value: a key outside the targets or not a key URL (one
              carrying a planted secret), a request id that is empty, long, non-ASCII, NUL or a secret, the id of a
              seeded row of the *other* target key (a forgery), a bad trigger, force or time, a bad event version, a
              bad compromised_version or accept_breakage
    text      cut, spliced, padded past the 4096-byte limit (or to exactly the limit), doubled, nested, a BOM, junk

A valid message for a target key is accepted and runs for real: the worker takes the key's lease, records the row,
reconciles (the keys are not due, so it reads, decides and records "skipped"; a rare ``force`` creates a version and
repoints the account; a break-glass request then takes discovery's census and disables the compromised version: for
a version the key has, once a new version was created and the account moved off it; for one it lacks, the disabling
fails and the request ends failed) and publishes the outcome; the poison handler marks the row failed and says so.
Those writes are allowed. A message naming a finished row of the same request is a duplicate: accepted, nothing to
do. Everything else must be refused with one ``rotation.message_rejected`` line and no write.

The break-glass oracle (``judge_glass``), for a message whose text was not edited: one that breaks the break-glass
rules must be refused, and when nothing else was changed its reason names the field at fault (``unnamed``
otherwise); an unmutated break-glass request is accepted when it names a target key and its request id is new or
already the same request's (``wrong_answer`` otherwise), and refused when its key is outside the targets or its id is
another request's, such as a seeded row's (``unnamed`` otherwise).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.app import RotationApp
from rotation.model import KEY_VERSION_PATTERN, MAX_MESSAGE_BYTES, KeyRef, RotationRequest, Trigger
from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, REFUSALS, SEEDS, Observation, Tally, World, judge_trigger, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import (
    MUTATION_COUNTS,
    current,
    flags_bad,
    glass_versions_bad,
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


@dataclass(frozen=True)
class Message:
    """One case: the message's text, and what the oracle needs to know of how it was made."""

    text: str
    fields: dict[str, Any] | None = None  # the JSON object the text was written from; None once the text was edited
    request: RotationRequest | None = None  # the break-glass request it is, when nothing was changed after to_message
    glass_only: bool = False  # only the break-glass rules were broken, nothing else was changed

    def __repr__(self) -> str:
        return repr(self.text)


def glass_fault(fields: dict[str, Any]) -> str | None:
    """The field to name when ``fields`` break the codec's break-glass rules, in the order ``from_message`` checks
    them; None when they keep them (whatever else is wrong)."""
    has_version, has_accept = "compromised_version" in fields, "accept_breakage" in fields
    if has_version != has_accept:
        return "accept_breakage" if has_version else "compromised_version"
    if not has_version:
        return None
    version = fields["compromised_version"]
    if not isinstance(version, str) or KEY_VERSION_PATTERN.fullmatch(version) is None:
        return "compromised_version"
    if not isinstance(fields["accept_breakage"], bool):
        return "accept_breakage"
    return None if fields.get("force") is True else "force"


def glass_versions(world: World, key: KeyRef) -> st.SearchStrategy[str]:
    """Versions for a break-glass request: mostly one the key lacks (random hex: nobody is on it, its disabling fails
    and the request ends failed), in one of four one it has now (when it is the current one: a new version, the
    account moved off it, and it is disabled)."""
    has = current(lambda: world.key_versions(key.name), fallback="0" * 32)
    return weighted((3, versions_valid), (1, has))


@st.composite
def broken_glass(draw: st.DrawFn, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (a message's) with the break-glass rules broken one way."""
    fields = {name: value for name, value in fields.items() if name not in ("compromised_version", "accept_breakage")}
    version = draw(versions_valid)
    how = draw(
        st.sampled_from(["version alone", "accept alone", "null version", "bad version", "bad accept", "unforced"])
    )
    if how == "version alone":
        return {**fields, "force": True, "compromised_version": version}
    if how == "accept alone":
        return {**fields, "accept_breakage": draw(st.booleans())}
    if how == "null version":
        return {**fields, "force": True, "compromised_version": None, "accept_breakage": draw(st.booleans())}
    if how == "bad version":
        bad = draw(glass_versions_bad.filter(lambda v: not (isinstance(v, str) and KEY_VERSION_PATTERN.fullmatch(v))))
        return {**fields, "force": True, "compromised_version": bad, "accept_breakage": draw(st.booleans())}
    if how == "bad accept":
        return {**fields, "force": True, "compromised_version": version, "accept_breakage": draw(flags_bad)}
    return {**fields, "force": False, "compromised_version": version, "accept_breakage": draw(st.booleans())}


@st.composite
def messages(draw: st.DrawFn, world: World) -> Message:
    """One message: ``to_message()`` of a request (a break-glass one in about one of ten), its break-glass rules
    broken (about one in seven), its fields mutated, its text edited, or junk."""
    kind = draw(st.sampled_from(["message"] * 8 + ["limit", "junk"]))
    if kind == "junk":
        return Message(draw(junk_text | json_values.map(json.dumps)))
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
    glass = draw(st.sampled_from(["none"] * 15 + ["valid"] * 2 + ["broken"] * 3))
    if glass == "valid":
        version = draw(glass_versions(world, request.key))
        request = replace(request, force=True, compromised_version=version, accept_breakage=draw(st.booleans()))
    text = request.to_message()
    if kind == "limit":  # whitespace after the object, to exactly the limit or one byte over it
        over = draw(st.sampled_from([0, 1]))
        text += " " * (MAX_MESSAGE_BYTES - len(text.encode()) + over)
        return Message(text) if over else Message(text, json.loads(text), request if glass == "valid" else None)
    made = json.loads(text)
    if glass == "broken":
        made = draw(broken_glass(made))
    fields = draw(
        mutated(
            made,
            {
                "request_id": st.sampled_from(seeded) | ids_bad,
                "key": bad_keys(world),
                "trigger": TRIGGERS_BAD | json_values | planted,
                "force": st.sampled_from(["true", "false", 1, 0, None, [], {}]),
                "requested_at": TIMES_BAD | json_values | planted,
                "event_version": versions_bad,
                "compromised_version": glass_versions_bad | versions_valid,
                "accept_breakage": flags_bad,
            },
            # A break-glass case is left as it was made more often, so the oracle can predict its answer exactly.
            counts=MUTATION_COUNTS if glass == "none" else st.sampled_from([0, 0, 0, 1, 2]),
        )
    )
    text = json.dumps(
        fields, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])), ensure_ascii=draw(st.booleans())
    )
    if draw(st.sampled_from([False, False, False, True])):
        return Message(draw(text_mutation(text)))
    # Compared as JSON: to Python, 1 == True and 0.0 == False, but not to the codec.
    untouched = json.dumps(fields, sort_keys=True) == json.dumps(made, sort_keys=True)
    if len(text.encode()) > MAX_MESSAGE_BYTES:  # refused for its size first, whatever else it holds
        return Message(text, fields)
    valid_glass = request if glass == "valid" and untouched else None
    return Message(text, fields, valid_glass, glass == "broken" and untouched)


def judge_glass(family: Tally, app: RotationApp, message: Message, seen: Observation, before: Any) -> None:
    """The break-glass oracle (module docstring). ``before`` is the ledger row of the request's id before delivery
    (None when there was none)."""
    refusals = seen.named(*REFUSALS)
    why = str(getattr(refusals[0], "why", "")) if refusals else ""
    fault = glass_fault(message.fields) if message.fields is not None else None
    if fault is not None:
        if not refusals:
            family.flag("unnamed", message, f"accepted, but {fault} breaks the break-glass rules", signature=fault)
        elif message.glass_only and fault not in why:
            family.flag("unnamed", message, f"refused without naming {fault}: {why}", signature=f"{fault} unnamed")
        return
    request = message.request
    if request is None:
        return
    ours = app.settings.target_for(request.key) is not None
    theirs = before is not None and not before.describes(request)
    if ours and not theirs and refusals:
        family.flag("wrong_answer", message, f"a valid break-glass request was refused: {why}", signature="refused")
    elif not (ours and not theirs) and not refusals:
        what = "a key outside the targets" if not ours else f"the id of another request ({before.key.id})"
        family.flag("unnamed", message, f"accepted a break-glass request for {what}", signature="accepted")


def run_family(world: World, family_name: str, function: str) -> None:
    family = tally(family_name)
    with world.serving(family_name) as served:

        @settings(max_examples=budget(family_name))
        @given(message=messages(world))
        def deliver(message: Message) -> None:
            error: BaseException | None = None
            before = served.app.ledger.get(message.request.request_id) if message.request else None
            with world.observe(served.transport) as seen:
                try:
                    served.host.deliver_message(function, message.text, message_id=str(uuid.uuid4()))
                except Exception as exc:  # noqa: BLE001 -- counted: only Redeliver may leave, and none should
                    error = exc
            judge_trigger(family, world.secrets, message.text, seen, error)
            judge_glass(family, served.app, message, seen, before)

        deliver()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()


def test_rotation_requests_messages(world: World) -> None:
    run_family(world, "rotation_requests", "rotation_worker")


def test_rotation_poison_messages(world: World) -> None:
    run_family(world, "rotation_poison", "rotation_poison")

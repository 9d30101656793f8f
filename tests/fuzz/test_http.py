"""Family 5: HTTP. ``POST /api/rotations`` bodies and ``Idempotency-Key`` headers (``submit_rotation``), and
``GET /api/rotations/{request_id}`` route parameters (``get_rotation``), through ``FunctionsHost.http``.

Bodies: ``{"key", "force", "dry_run"}`` for a target key (some spelled another way; a ``new_versions: key_vault``
target too), for a key outside the targets, or not a key URL (one carrying a planted secret); in about one body of
three, break-glass fields as well: ``compromised_version`` (a version the key has, as the emulator's vault lists it
now, in either case; one it lacks: another key's or random hex; or not a version id: short, long, not hex, not text,
null, a planted secret), ``accept_breakage`` (absent, true, false, or not a boolean) and ``confirmation`` (none,
malformed, well-formed but not issued by the service, or the real one: see below). Every body is then mutated (fields
dropped, retyped, unknown fields with odd or secret names), edited as text, encoded as UTF-16/32 or with a BOM, over
16 KiB (and exactly at it), nested, or junk. Idempotency-Key: none, a fresh UUID, one of a small pool reused across
cases (so a reuse with another ``force`` is 422), too long, empty, non-ASCII, control characters, or a planted secret.
Route parameters: the seeded rows' ids, unknown UUIDs (404), and bad ids (empty, long, non-ASCII, NUL, '/', a planted
secret).

The real confirmation: about one break-glass body in three starts a conversation instead: a valid body (a target key, a
version it has, accept_breakage or not, no confirmation) goes first without a confirmation; when that answers a plan
(200), the same body goes again with the plan's confirmation (a case of its own, predicted 202), and, when that is
accepted, once more (a third case): the same body, the version or the key spelled another way (the version in the other
case, the key with or without a trailing '/'; both 202, the same request), or ``accept_breakage`` flipped (409, the
token confirms another plan). The family never runs the worker, so the key's state does not change between the calls.

Every answer must be JSON and below 500. A 4xx is rejected input: it writes nothing, its body is
``{"error": {"code", "message"}}``, and its message names the bad value by the rule of its code:

    code                   the message must contain
    BodyTooLarge     413   the body's size in bytes
    InvalidJson      400   "body" (the whole body is the bad value; it may be binary, so it is not echoed)
    InvalidBody      400   "body"
    UnknownField     400   a clipped prefix of one of the unknown field names (or '' for an empty name)
    InvalidField     400   the name of a field whose value is bad: force, dry_run or accept_breakage (not true/false),
                           key (missing or not text), compromised_version (not a version id; or accept_breakage true or
                           a confirmation without it), force or dry_run (true beside compromised_version)
    InvalidConfirmation 400  "confirmation" and a clipped prefix of its value as JSON
    InvalidKey       400   a clipped prefix of the key value (or "key URL" when it is blank)
    KeyNotAllowed    403   the key's name (the URL's last path segment)
    VersionNotFound  404   a clipped prefix of compromised_version
    ForceNotAllowed  409   the key's name
    ConfirmationRefused 409  "confirmation"
    InvalidIdempotencyKey  400   "Idempotency-Key" (its value may be unprintable or 10 KB long, so it is not echoed)
    IdempotencyKeyReused   422   "Idempotency-Key" and a clipped prefix of its value
    ForceCooldown    429   the key's name
    InvalidRequestId 400   a clipped prefix of the request id (or "request id" when it is blank)
    RequestNotFound  404   a clipped prefix of the request id

A clipped prefix is the first 8 characters of the value after ``rotation.redact.redacted`` (a value is shown
redacted, so a secret in it is not), found as is, or escaped as ``repr`` or ``json.dumps`` would write it. Any other
4xx code fails the rule.

A break-glass body (one that names any of its three fields) is predicted exactly (``predict``), by the feature's
checks in their order: UnknownField; InvalidField for a flag that is not a boolean; InvalidField for accept_breakage
true or a confirmation without compromised_version, for a compromised_version that is not 32 hex digits, for one
beside force or dry_run true; InvalidConfirmation; the key's checks (InvalidField, InvalidKey, KeyNotAllowed,
ForceNotAllowed for the key_vault target); InvalidIdempotencyKey; then 404 VersionNotFound for a version the key does
not have, 200 with the plan (docs/openapi.json's ``BreakGlassPlan``, for that version and accept_breakage) without a
confirmation, 202 with the plan's own confirmation, and 409 ConfirmationRefused (``RefusedConfirmation``: "error" and
the fresh "plan") with any other well-formed one. A plan and a refused confirmation write nothing. A 202 records one
ledger row (every table write names its request id, and the row is there afterwards) and queues one message, which
that row describes (the same request id, version and accept_breakage); its repeat answers the same request id, and
any message it queues again is one the row describes. A predicted refusal that is not refused counts as ``unnamed``,
any other difference as ``wrong_answer``.
"""

from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from rotation.app import MAX_BODY_BYTES, RotationApp
from rotation.breakglass import TOKEN_PATTERN
from rotation.errors import InvalidInput
from rotation.model import KEY_VERSION_PATTERN, KeyRef, RotationRequest, request_id_for
from rotation.redact import redacted
from rotation.storage import REQUESTS_QUEUE
from tests.fuzz.harness import KEY, KEY2, KV_KEY, OTHER_KEY, SEEDS, Observation, Tally, World, check_secrets, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import (
    current,
    flags_bad,
    glass_versions_bad,
    ids_bad,
    json_values,
    junk_text,
    mutated,
    nested_text,
    planted,
    repeated,
    secret_url,
    text_mutation,
    tokens_bad,
    tokens_foreign,
    versions_valid,
    weighted,
)

GLASS_FIELDS = ("compromised_version", "accept_breakage", "confirmation")
SUBMIT_FIELDS = ("key", "force", "dry_run", *GLASS_FIELDS)
IDEMPOTENCY_POOL = ("fuzz-idem-1", "fuzz-idem-2", "fuzz-idem-3", "fuzz-idem-4")
REPEATS = ("same", "version case", "key spelling", "accept_breakage flipped")
_ABSENT = object()
_OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text(encoding="utf-8"))
_SCHEMAS = {
    name: OAS30Validator(
        {"$ref": f"#/components/schemas/{name}", "components": _OPENAPI["components"]},
        format_checker=oas30_format_checker,
    )
    for name in ("BreakGlassPlan", "RefusedConfirmation")
}


@dataclass(frozen=True)
class Post:
    body: bytes
    idempotency_key: str | None
    fields: Any  # the JSON the body was written from, when it was
    confirm: bool = False  # a conversation: when this body answers a plan, send it again with the plan's confirmation
    repeat: str = "same"  # and, when that is accepted, once more as REPEATS says
    issued: tuple[str, str, str, bool] | None = None  # (token, key name, version, accept_breakage) the service issued
    request_id: str | None = None  # the request a repeat of a confirmed call must answer

    def __repr__(self) -> str:
        flow = f" confirm then {self.repeat}" if self.confirm else ""
        flow += f" issued={self.issued[0]}" if self.issued else ""
        return f"POST body={self.body[:300]!r} Idempotency-Key={self.idempotency_key!r:.120}{flow}"

    def again(self, fields: dict[str, Any], **changes: Any) -> Post:
        """The next call of a conversation: ``fields`` as the body, the same Idempotency-Key."""
        return replace(self, body=json.dumps(fields).encode(), fields=fields, confirm=False, **changes)


@dataclass(frozen=True)
class Get:
    request_id: str

    def __repr__(self) -> str:
        return f"GET request_id={self.request_id!r:.300}"


def key_values(world: World) -> st.SearchStrategy[Any]:
    good = st.sampled_from(
        [world.key_url(KEY), world.key_url(KEY2), world.key_url(KEY.upper()), world.key_url(KEY) + "/"]
    )
    outside = st.sampled_from(
        [world.key_url(OTHER_KEY), world.key_url("missing-cmk"), "https://fuzz-kv.vault.azure.net/keys/fuzz-cmk"]
    )
    bad = st.one_of(
        st.sampled_from(
            [
                f"{world.key_url(KEY)}/{world.versions[KEY]}",
                world.key_url(KEY).replace("https://", "http://"),
                world.key_url(KEY).replace("/keys/", "/secrets/"),
                world.key_url("a" * 128),
                "https://kv..vault.azure.net/keys/k",
                "https://[x/keys/k",
                "",
                " ",
                "\x00",
            ]
        ),
        secret_url(world.key_url(KEY)),
        planted,
        st.text(max_size=30),
    )
    key_vault = st.just(world.key_url(KV_KEY))  # new_versions: key_vault: force and break-glass are 409
    return weighted((12, good), (1, key_vault), (2, outside), (2, bad))


def version_values(world: World, key: Any) -> st.SearchStrategy[Any]:
    """``compromised_version`` values for a body naming ``key``: a version the key has (as the emulator's vault holds
    it now, spelled in either case), one it lacks (another key's, or random hex), or not a version id."""
    name = KeyRef.parse(key).name if isinstance(key, str) and _is_key_url(key) else KEY
    has = current(lambda: world.key_versions(name), fallback=world.versions[KEY])
    others = [v for other, v in world.versions.items() if other.lower() != name.lower()]
    return weighted(
        (4, has),
        (1, has.map(str.upper)),
        (1, st.sampled_from(others)),
        (1, versions_valid),
        (2, glass_versions_bad),
    )


def _is_key_url(value: Any) -> bool:
    try:
        KeyRef.parse(value)
    except ValueError:
        return False
    return isinstance(value, str)


def idempotency_keys() -> st.SearchStrategy[str | None]:
    bad = st.one_of(
        st.sampled_from(["", " ", "é", "a\x00b", "a\nb", "\t", "x" * 201, "x" * 200]),
        repeated(st.sampled_from(["a", "é"]), 150, 10_000),
        st.text(max_size=20),
    )
    return weighted(
        (4, st.none()), (2, st.uuids().map(str)), (1, st.sampled_from(IDEMPOTENCY_POOL)), (1, planted), (1, bad)
    )


@st.composite
def posts(draw: st.DrawFn, world: World) -> Post:
    kind = draw(st.sampled_from(["object"] * 10 + ["encoded", "limit", "nested", "junk", "binary"]))
    idempotency_key = draw(idempotency_keys())
    if kind == "junk":
        return Post(draw(junk_text).encode("utf-8"), idempotency_key, None)
    if kind == "binary":
        return Post(draw(st.binary(max_size=64)), idempotency_key, None)
    if kind == "nested":
        return Post(draw(nested_text(20_000)).encode(), idempotency_key, None)
    glass = draw(st.sampled_from(["no"] * 10 + ["glass"] * 4 + ["conversation"] * 2))  # a third break-glass
    if glass == "conversation" and kind == "object":
        return draw(conversations(world))
    fields: dict[str, Any] = {"key": draw(key_values(world))}
    for flag in ("force", "dry_run"):
        # Beside compromised_version either flag is refused: keep them rarer there, so more bodies reach the plan.
        value = draw(st.sampled_from(["absent"] * (3 if glass == "no" else 9) + [False, True]))
        if value != "absent":
            fields[flag] = value
    if glass != "no":
        fields["compromised_version"] = draw(version_values(world, fields["key"]))
        accept = draw(st.sampled_from(["absent", "absent", False, True]))
        if accept != "absent":
            fields["accept_breakage"] = accept
        confirmation = draw(st.sampled_from(["none", "none", "malformed", "foreign"]))
        if confirmation == "malformed":
            fields["confirmation"] = draw(tokens_bad)
        elif confirmation == "foreign":
            fields["confirmation"] = draw(tokens_foreign)
    if kind == "object":
        fields = draw(
            mutated(
                fields,
                {
                    "key": json_values | key_values(world),
                    "force": st.sampled_from(["true", 1, 0, None, [], "yes"]),
                    "dry_run": st.sampled_from(["false", 1, 0, None, {}, "no"]),
                    "compromised_version": glass_versions_bad | version_values(world, fields["key"]),
                    "accept_breakage": flags_bad | st.booleans(),
                    "confirmation": tokens_bad | tokens_foreign,
                },
                counts=st.sampled_from([0] * 6 + [1, 1, 2, 3]),
            )
        )
        if draw(st.sampled_from([False] * 9 + [True])):  # a stray break-glass field, on any body
            stray = draw(st.sampled_from(GLASS_FIELDS))
            strays = {"compromised_version": version_values(world, fields.get("key")), "accept_breakage": flags_bad}
            fields[stray] = draw(strays.get(stray, tokens_bad | tokens_foreign) | st.booleans())
    text = json.dumps(fields, ensure_ascii=draw(st.booleans()))
    if kind == "limit":  # whitespace after the object, to exactly the limit or one byte over it
        return Post(
            (text + " " * (MAX_BODY_BYTES - len(text.encode()) + draw(st.integers(0, 1)))).encode(), None, fields
        )
    if kind == "encoded":
        return Post(text.encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "utf-16-le"]))), None, fields)
    if draw(st.sampled_from([False] * 5 + [True])):
        return Post(draw(text_mutation(text)).encode("utf-8"), idempotency_key, None)
    return Post(text.encode("utf-8"), idempotency_key, fields)


@st.composite
def conversations(draw: st.DrawFn, world: World) -> Post:
    """A valid break-glass body that starts a conversation (module docstring): a target key, a version it has, no
    confirmation; it goes first without one, then with the plan's, then once more as ``repeat`` says."""
    key = draw(st.sampled_from([world.key_url(KEY), world.key_url(KEY2), world.key_url(KEY2) + "/"]))
    version = draw(current(lambda: world.key_versions(KeyRef.parse(key).name), fallback=world.versions[KEY]))
    fields: dict[str, Any] = {"key": key, "compromised_version": draw(st.sampled_from([version, version.upper()]))}
    accept = draw(st.sampled_from(["absent", False, True]))
    if accept != "absent":
        fields["accept_breakage"] = accept
    idempotency_key = draw(weighted((3, st.none()), (1, st.uuids().map(str))))
    repeat = draw(st.sampled_from(REPEATS))
    return Post(json.dumps(fields).encode(), idempotency_key, fields, confirm=True, repeat=repeat)


def gets() -> st.SearchStrategy[Get]:
    seeded = st.sampled_from([request_id for request_id, _, _ in SEEDS])
    return st.one_of(seeded, st.uuids().map(str), ids_bad.map(str), planted).map(Get)


# --- the rules ----------------------------------------------------------------------------------------------------


def names(message: str, value: str, k: int = 8) -> bool:
    """True when ``message`` shows a clipped prefix of ``value`` (see the module docstring). The prefix of the value
    as given counts too: a message that echoes a secret names the value (the leak is counted as a secret hit)."""
    forms = set()
    for prefix in (redacted(value)[:k], value[:k]):
        forms |= {
            prefix,
            repr(prefix)[1:-1],
            repr(prefix + "'\"")[1:-4],  # the escaping repr uses when the whole value holds both kinds of quotes
            json.dumps(prefix)[1:-1],
            json.dumps(prefix, ensure_ascii=False)[1:-1],
        }
    return any(form and form in message for form in forms)


def key_name(value: str) -> str:
    return value.strip().rstrip("/").rsplit("/", 1)[-1]


def names_bad_value(case: Post | Get, code: str, message: str) -> bool:
    """The rule of ``code`` (module docstring) for ``case``."""
    if isinstance(case, Get):
        if code in ("InvalidRequestId", "RequestNotFound"):
            blank = not case.request_id.strip()
            return names(message, case.request_id) or (blank and "request id" in message)
        return False
    fields = case.fields if isinstance(case.fields, dict) else {}
    key = fields.get("key")
    if code == "BodyTooLarge":
        return str(len(case.body)) in message
    if code in ("InvalidJson", "InvalidBody"):
        return "body" in message
    if code == "UnknownField":
        unknown = [name for name in _parsed(case) if name not in SUBMIT_FIELDS]
        return any(names(message, name) or (name == "" and "''" in message) for name in unknown)
    if code == "InvalidField":
        return any(name in message for name in _bad_fields(_parsed(case)))
    if code == "InvalidConfirmation":
        value = _parsed(case).get("confirmation", _ABSENT)
        # Text is named by its clipped prefix (an empty one as ''), anything else by its repr or its type.
        shown = names(message, value) or (value == "" and "''" in message) if isinstance(value, str) else True
        return value is not _ABSENT and "confirmation" in message and shown
    if code == "ConfirmationRefused":
        return "confirmation" in message
    if code == "VersionNotFound":
        value = _parsed(case).get("compromised_version")
        return isinstance(value, str) and names(message, value.lower())  # version ids are lower case, as Key Vault's
    if code == "InvalidKey":
        value = _parsed(case).get("key", key)
        return isinstance(value, str) and (names(message, value) or (not value.strip() and "key URL" in message))
    if code in ("KeyNotAllowed", "ForceCooldown", "ForceNotAllowed"):
        value = _parsed(case).get("key", key)
        return isinstance(value, str) and key_name(value) in message
    if code == "InvalidIdempotencyKey":
        return "Idempotency-Key" in message
    if code == "IdempotencyKeyReused":
        return "Idempotency-Key" in message and names(message, case.idempotency_key or "")
    return False


def _bad_fields(data: dict[str, Any]) -> list[str]:
    """The fields of a POST body whose values are bad by an InvalidField rule (module docstring)."""
    flags = ("force", "dry_run", "accept_breakage")
    bad = [name for name in flags if name in data and not isinstance(data[name], bool)]
    if not isinstance(data.get("key"), str):
        bad.append("key")
    version = data.get("compromised_version")
    if "compromised_version" not in data and (data.get("accept_breakage") is True or "confirmation" in data):
        bad += ["accept_breakage", "confirmation", "compromised_version"]
    elif "compromised_version" in data and not _is_version(version):
        bad.append("compromised_version")
    elif _is_version(version):
        bad += [name for name in ("force", "dry_run") if data.get(name) is True]
    return bad


def _is_version(value: Any) -> bool:
    return isinstance(value, str) and KEY_VERSION_PATTERN.fullmatch(value) is not None


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and TOKEN_PATTERN.fullmatch(value) is not None


# --- the break-glass oracle ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicted:
    """The answer a break-glass body must get: its status and, for a 4xx, its code."""

    status: int
    code: str = ""

    def __str__(self) -> str:
        return f"{self.status} {self.code}".strip()


def predict(world: World, app: RotationApp, case: Post, data: dict[str, Any]) -> Predicted | None:
    """The answer to a break-glass body (one that names any of ``GLASS_FIELDS``) by the checks in their order (module
    docstring); None for any other body, which the naming rules judge."""
    if len(case.body) > MAX_BODY_BYTES or not any(name in data for name in GLASS_FIELDS):
        return None
    if set(data) - set(SUBMIT_FIELDS):
        return Predicted(400, "UnknownField")
    if any(not isinstance(data.get(name, False), bool) for name in ("force", "dry_run", "accept_breakage")):
        return Predicted(400, "InvalidField")
    version = data.get("compromised_version", _ABSENT)
    confirmation = data.get("confirmation", _ABSENT)
    accept = data.get("accept_breakage", False)
    if version is _ABSENT:
        if accept or confirmation is not _ABSENT:
            return Predicted(400, "InvalidField")
        return None  # accept_breakage false alone: an ordinary request
    if not _is_version(version):
        return Predicted(400, "InvalidField")
    if data.get("force") is True or data.get("dry_run") is True:
        return Predicted(400, "InvalidField")
    if confirmation is not _ABSENT and not _is_token(confirmation):
        return Predicted(400, "InvalidConfirmation")
    key = data.get("key")
    if not isinstance(key, str):
        return Predicted(400, "InvalidField")
    try:
        ref = KeyRef.parse(key)
    except ValueError:
        return Predicted(400, "InvalidKey")
    target = app.settings.target_for(ref)
    if target is None:
        return Predicted(403, "KeyNotAllowed")
    if target.refuses_force() is not None:
        return Predicted(409, "ForceNotAllowed")
    if case.idempotency_key is not None:
        try:
            request_id_for(case.idempotency_key, ref)
        except InvalidInput:
            return Predicted(400, "InvalidIdempotencyKey")
    if version.lower() not in {v.lower() for v in world.key_versions(ref.name)}:
        return Predicted(404, "VersionNotFound")
    if confirmation is _ABSENT:
        return Predicted(200)
    if case.issued == (confirmation, ref.name.lower(), version.lower(), accept):
        return Predicted(202)
    return Predicted(409, "ConfirmationRefused")


def _parsed(case: Post) -> dict[str, Any]:
    """The body as the app reads it (any encoding json.loads detects), or {}. It is parsed on a thread of its own, as
    the worker runs the function on its threadpool: how deep a nesting json.loads reaches before RecursionError
    depends on the stack it starts from, and Hypothesis's is deep."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_parse_object, case.body).result()


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def judge_http(
    family: Tally,
    world: World,
    case: Post | Get,
    seen: Any,
    answer: Any,
    error: BaseException | None,
    app: RotationApp | None = None,
) -> None:
    if error is not None:
        family.flag("uncaught", case, f"{type(error).__name__}: {error}", signature=type(error).__name__)
        family.verdict(False)
        return
    status = answer.status_code
    text = answer.get_body().decode("utf-8", "replace")
    seen.shown += [text, json.dumps(dict(answer.headers))]
    if status >= 500:
        family.flag("http_5xx", case, f"{status} {text[:300]}", signature=f"{status} {_code(text)}")
    how = f"{status} {_code(text)}".strip()
    family.kinds[how] += 1
    family.verdict(400 <= status < 500, seen, case, how)
    if 400 <= status < 500:
        try:
            error_body = json.loads(text)["error"]
            code, message = error_body["code"], error_body["message"]
            shaped = isinstance(code, str) and isinstance(message, str)
        except (ValueError, KeyError, TypeError):
            shaped, code, message = False, None, None
        if not shaped or answer.mimetype != "application/json":
            family.flag("unnamed", case, f"{status}: not the error format: {text[:300]}", signature=how)
        elif not names_bad_value(case, code, message):
            family.flag("unnamed", case, f"{status} {code}: {message[:300]}", signature=how)
    if isinstance(case, Post) and app is not None:
        judge_break_glass(family, world, app, case, seen, status, text)
    check_secrets(family, world.secrets, case, seen, how)


def judge_break_glass(
    family: Tally, world: World, app: RotationApp, case: Post, seen: Observation, status: int, text: str
) -> None:
    """The break-glass oracle's verdict on one answer: the predicted status and code, and what each answer must hold
    and write (module docstring)."""
    data = _parsed(case)
    predicted = predict(world, app, case, data)
    if predicted is None:
        return
    code = _code(text)
    if (status, code if status >= 400 else "") != (predicted.status, predicted.code):
        if predicted.status >= 400 and not 400 <= status < 500:
            family.flag("unnamed", case, f"answered {status} {text[:300]}", signature=f"predicted {predicted}")
        else:
            detail = f"answered {status} {text[:300]}"
            family.flag("wrong_answer", case, detail, signature=f"predicted {predicted}, answered {status} {code}")
        return
    if status == 200:
        plan = json.loads(text)
        problems = _schema_errors("BreakGlassPlan", plan)
        if str(plan.get("compromised_version", "")).lower() != str(data["compromised_version"]).lower():
            problems.append(f"the plan is for version {plan.get('compromised_version')}")
        if plan.get("accept_breakage") is not data.get("accept_breakage", False):
            problems.append(f"the plan has accept_breakage {plan.get('accept_breakage')}")
        if problems:
            family.flag("wrong_answer", case, problems, signature="200 break-glass plan")
        if seen.writes():
            family.flag("rejected_writes", case, seen.writes(), signature="200 break-glass plan")
    elif status == 409 and code == "ConfirmationRefused":
        problems = _schema_errors("RefusedConfirmation", json.loads(text))
        if problems:
            family.flag("wrong_answer", case, problems, signature="409 ConfirmationRefused")
    elif status == 202:
        problems = _confirmed_writes(app, case, seen, json.loads(text))
        if problems:
            repeat = "a repeat" if case.request_id else "the first"
            family.flag("wrong_answer", case, problems, signature=f"202 break-glass, {repeat}")


def _schema_errors(name: str, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300] for e in _SCHEMAS[name].iter_errors(instance)]


def _confirmed_writes(app: RotationApp, case: Post, seen: Observation, row: dict[str, Any]) -> list[str]:
    """What is wrong with a confirmed break-glass call's 202 (``row``, the ledger row it answered) and its writes."""
    request_id = row.get("request_id")
    problems = []
    if case.request_id is not None and request_id != case.request_id:
        problems.append(f"the repeat answered request {request_id}, the first call {case.request_id}")
    table = app.ledger.table_name
    if seen.emulator_writes or seen.outcome_events:
        problems.append(f"it wrote beyond the ledger and the queue: {seen.writes()}")
    for write in seen.storage_writes:
        if f"/{table}" in write.url and str(request_id) not in write.body:
            problems.append(f"a ledger write not for request {request_id}: {write.method} {write.url}")
    messages = _queued(seen, table)
    if case.request_id is None and len(messages) != 1:
        problems.append(f"{len(messages)} queue messages, not one")
    if len(messages) > 1:
        problems.append(f"{len(messages)} queue messages")
    for message in messages:
        try:
            sent = RotationRequest.from_message(message)
        except InvalidInput as exc:
            problems.append(f"a queue message the worker refuses: {exc}")
            continue
        described = (sent.request_id, sent.compromised_version or "", sent.accept_breakage) == (
            request_id,
            row.get("compromised_version"),
            row.get("accept_breakage"),
        )
        if not described:
            only_case = (sent.request_id, (sent.compromised_version or "").lower(), sent.accept_breakage) == (
                request_id,
                str(row.get("compromised_version")).lower(),
                row.get("accept_breakage"),
            )
            problems.append(
                f"the queued request (id {sent.request_id}, compromised_version {sent.compromised_version}, "
                f"accept_breakage {sent.accept_breakage}) is not the row's (id {request_id}, compromised_version "
                f"{row.get('compromised_version')}, accept_breakage {row.get('accept_breakage')})"
                + (": the version in another case" if only_case else "")
            )
    stored = app.ledger.get(str(request_id)) if isinstance(request_id, str) else None
    if stored is None or stored.compromised_version != row.get("compromised_version"):
        problems.append(f"the ledger row of request {request_id} is {stored}")
    return problems


def _queued(seen: Observation, table: str) -> list[str]:
    """The texts of the messages a case sent to the rotation-requests queue."""
    texts = []
    for write in seen.storage_writes:
        if write.method == "POST" and f"/{REQUESTS_QUEUE}/messages" in write.url:
            for encoded in re.findall(r"<MessageText>(.*?)</MessageText>", write.body, flags=re.DOTALL):
                texts.append(base64.b64decode(encoded).decode("utf-8", "replace"))
    return texts


def _code(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _respelled(world: World, fields: dict[str, Any], repeat: str) -> dict[str, Any]:
    """The confirmed body for its repeat: the same, or with one thing changed as ``repeat`` says."""
    if repeat == "version case":
        version = fields["compromised_version"]
        return {**fields, "compromised_version": version.lower() if version != version.lower() else version.upper()}
    if repeat == "key spelling":  # a trailing '/' added or removed (the emulator's key names, unlike Key Vault's, keep
        # their case, so a name in the other case would be another key there)
        key = fields["key"]
        return {**fields, "key": key.rstrip("/") if key.endswith("/") else key + "/"}
    if repeat == "accept_breakage flipped":
        return {**fields, "accept_breakage": not fields.get("accept_breakage", False)}
    return fields


def test_http_requests(world: World) -> None:
    family = tally("http")
    # A short force cooldown, so that forced requests are recorded (and an Idempotency-Key reused with another force
    # is 422) instead of nearly all being 429 after the first. The key_vault target makes force and break-glass 409.
    targets = json.dumps([*world.targets, world.key_vault_target()])
    overrides = {"ROTATION_FORCE_COOLDOWN": "PT2S", "ROTATION_TARGETS": targets}
    with world.roomy_resource_graph(), world.serving("http", settings=overrides) as served:

        def post(case: Post) -> Any:
            """Send one POST as a case of its own: observed, judged; the answer (None when it raised)."""
            answer, error = None, None
            with world.observe(served.transport) as seen:
                try:
                    headers = {} if case.idempotency_key is None else {"Idempotency-Key": case.idempotency_key}
                    answer = served.host.http(
                        "submit_rotation", "POST", "/api/rotations", body=case.body, headers=headers
                    )
                except Exception as exc:  # noqa: BLE001 -- counted: nothing may leave an HTTP function
                    error = exc
            judge_http(family, world, case, seen, answer, error, served.app)
            return answer

        def converse(case: Post) -> None:
            """The plan, then its confirmation, then a repeat: each call a case (module docstring)."""
            answer = post(case)
            if answer is None or answer.status_code != 200:
                return
            plan = json.loads(answer.get_body())
            fields = {**case.fields, "confirmation": plan["confirmation"]}
            ref = KeyRef.parse(fields["key"])
            version, accept = plan["compromised_version"].lower(), plan["accept_breakage"]
            issued = (plan["confirmation"], ref.name.lower(), version, accept)
            answer = post(case.again(fields, issued=issued))
            if answer is None or answer.status_code != 202:
                return
            request_id = json.loads(answer.get_body())["request_id"]
            post(case.again(_respelled(world, fields, case.repeat), issued=issued, request_id=request_id))

        @settings(max_examples=budget("http"))
        @given(
            case=st.sampled_from(["post"] * 3 + ["get"]).flatmap(
                lambda kind: posts(world) if kind == "post" else gets()
            )
        )
        def request(case: Post | Get) -> None:
            if isinstance(case, Post):
                converse(case) if case.confirm else post(case)
                return
            answer, error = None, None
            with world.observe(served.transport) as seen:
                try:
                    answer = served.host.http(
                        "get_rotation",
                        "GET",
                        "/api/rotations/" + quote(case.request_id, safe=""),
                        route_params={"request_id": case.request_id},
                    )
                except Exception as exc:  # noqa: BLE001 -- counted: nothing may leave an HTTP function
                    error = exc
            judge_http(family, world, case, seen, answer, error)

        request()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()

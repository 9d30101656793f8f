"""Family 5: HTTP. ``POST /api/rotations`` bodies and ``Idempotency-Key`` headers (``submit_rotation``), and
``GET /api/rotations/{request_id}`` route parameters (``get_rotation``), through ``FunctionsHost.http``.

Bodies: ``{"key", "force", "dry_run"}`` for a target key (some spelled another way), for a key outside the targets, or
not a key URL (one carrying a planted secret); mutated (fields dropped, retyped, unknown fields with odd or secret
names), edited as text, encoded as UTF-16/32 or with a BOM, over 16 KiB (and exactly at it), nested, or junk.
Idempotency-Key: none, a fresh UUID, one of a small pool reused across cases (so a reuse with another ``force`` is
422), too long, empty, non-ASCII, control characters, or a planted secret. Route parameters: the seeded rows' ids,
unknown UUIDs (404), and bad ids (empty, long, non-ASCII, NUL, '/', a planted secret).

Every answer must be JSON and below 500. A 4xx is rejected input: it writes nothing, its body is
``{"error": {"code", "message"}}``, and its message names the bad value by the rule of its code:

    code                   the message must contain
    BodyTooLarge     413   the body's size in bytes
    InvalidJson      400   "body" (the whole body is the bad value; it may be binary, so it is not echoed)
    InvalidBody      400   "body"
    UnknownField     400   a clipped prefix of one of the unknown field names (or '' for an empty name)
    InvalidField     400   the name of a field whose value is bad: force or dry_run (not true/false), key (missing
                           or not text)
    InvalidKey       400   a clipped prefix of the key value (or "key URL" when it is blank)
    KeyNotAllowed    403   the key's name (the URL's last path segment)
    InvalidIdempotencyKey  400   "Idempotency-Key" (its value may be unprintable or 10 KB long, so it is not echoed)
    IdempotencyKeyReused   422   "Idempotency-Key" and a clipped prefix of its value
    ForceCooldown    429   the key's name
    InvalidRequestId 400   a clipped prefix of the request id (or "request id" when it is blank)
    RequestNotFound  404   a clipped prefix of the request id

A clipped prefix is the first 8 characters of the value after ``rotation.redact.redacted`` (a value is shown
redacted, so a secret in it is not), found as is, or escaped as ``repr`` or ``json.dumps`` would write it. Any other
4xx code fails the rule.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.app import MAX_BODY_BYTES
from rotation.redact import redacted
from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, SEEDS, Tally, World, check_secrets, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import (
    ids_bad,
    json_values,
    junk_text,
    mutated,
    nested_text,
    planted,
    repeated,
    secret_url,
    text_mutation,
    weighted,
)

SUBMIT_FIELDS = ("key", "force", "dry_run")
IDEMPOTENCY_POOL = ("fuzz-idem-1", "fuzz-idem-2", "fuzz-idem-3", "fuzz-idem-4")


@dataclass(frozen=True)
class Post:
    body: bytes
    idempotency_key: str | None
    fields: Any  # the JSON the body was written from, when it was

    def __repr__(self) -> str:
        return f"POST body={self.body[:300]!r} Idempotency-Key={self.idempotency_key!r:.120}"


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
    return weighted((6, good), (1, outside), (1, bad))


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
    fields: dict[str, Any] = {"key": draw(key_values(world))}
    for flag in ("force", "dry_run"):
        value = draw(st.sampled_from(["absent", "absent", "absent", False, True]))
        if value != "absent":
            fields[flag] = value
    if kind == "object":
        fields = draw(
            mutated(
                fields,
                {
                    "key": json_values | key_values(world),
                    "force": st.sampled_from(["true", 1, 0, None, [], "yes"]),
                    "dry_run": st.sampled_from(["false", 1, 0, None, {}, "no"]),
                },
                counts=st.sampled_from([0] * 6 + [1, 1, 2, 3]),
            )
        )
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
        data = _parsed(case)
        bad = [name for name in ("force", "dry_run") if name in data and not isinstance(data[name], bool)]
        if not isinstance(data.get("key"), str):
            bad.append("key")
        return any(name in message for name in bad)
    if code == "InvalidKey":
        value = _parsed(case).get("key", key)
        return isinstance(value, str) and (names(message, value) or (not value.strip() and "key URL" in message))
    if code in ("KeyNotAllowed", "ForceCooldown"):
        value = _parsed(case).get("key", key)
        return isinstance(value, str) and key_name(value) in message
    if code == "InvalidIdempotencyKey":
        return "Idempotency-Key" in message
    if code == "IdempotencyKeyReused":
        return "Idempotency-Key" in message and names(message, case.idempotency_key or "")
    return False


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
    family: Tally, world: World, case: Post | Get, seen: Any, answer: Any, error: BaseException | None
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
    check_secrets(family, world.secrets, case, seen, how)


def _code(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def test_http_requests(world: World) -> None:
    family = tally("http")
    # A short force cooldown, so that forced requests are recorded (and an Idempotency-Key reused with another force
    # is 422) instead of nearly all being 429 after the first.
    with world.serving("http", settings={"ROTATION_FORCE_COOLDOWN": "PT2S"}) as served:

        @settings(max_examples=budget("http"))
        @given(
            case=st.sampled_from(["post"] * 3 + ["get"]).flatmap(
                lambda kind: posts(world) if kind == "post" else gets()
            )
        )
        def request(case: Post | Get) -> None:
            answer, error = None, None
            with world.observe(served.transport) as seen:
                try:
                    if isinstance(case, Post):
                        headers = {} if case.idempotency_key is None else {"Idempotency-Key": case.idempotency_key}
                        answer = served.host.http(
                            "submit_rotation", "POST", "/api/rotations", body=case.body, headers=headers
                        )
                    else:
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

"""Hypothesis strategies shared by the families: generic junk, planted secrets, and mutations of valid inputs.

Each family mixes three kinds of case, so that many get deep into validation and some are accepted:

    junk       recursive JSON, text, binary, huge values, '[' * N nesting: refused at the first check
    mutated    a valid input with a few fields dropped, retyped, replaced by a targeted bad value (a key outside the
               targets, a bad version, a long or non-ASCII or NUL id ...) or by junk, or extra fields added
    valid      a valid input for a target key (accepted), or for another key (refused by the target check)

Planted secrets (``harness.PLANTED_FORMS``) replace a whole value or are appended after a separator, and are never
mutated afterwards, so they keep the shape ``rotation.redact`` recognises.

Break-glass values: ``glass_versions_bad`` (compromised versions that are not version ids), ``flags_bad`` (true/false
fields that are not booleans), ``tokens_foreign`` (confirmations shaped like the service's that it never issued) and
``tokens_bad`` (confirmations that are not tokens); ``current`` draws from state outside Hypothesis, such as the
versions a key has now, without making Hypothesis's replays inconsistent.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.harness import PLANTED, PLANTED_FORMS, PLANTED_URL_PARTS

HEX = "0123456789abcdef"
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``st.one_of`` with weights: (3, a), (1, b) draws from ``a`` in about 3 cases of 4. (``one_of`` itself gives
    every distinct branch one share, and a strategy listed twice is the same branch.)"""
    shares = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(shares).flatmap(lambda index: choices[index][1])


# --- junk -------------------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=24)
    | st.sampled_from(["", " ", "\x00", "null", "true", "0", "-1", "1e999", "NaN", "é", "\u202e", "\ufeff"])
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
"""Any JSON value Python can write (NaN and Infinity included, as ``json.dumps`` writes them)."""


def repeated(parts: st.SearchStrategy[str], low: int, high: int) -> st.SearchStrategy[str]:
    """A short drawn text repeated ``low``-``high`` times: a huge value from a few choices."""
    return st.builds(lambda part, times: part * times, parts, st.integers(low, high))


def nested_text(max_depth: int = 100_000) -> st.SearchStrategy[str]:
    """'[' * N, '{"a":' * N and the like, closed or not: JSON nested deeper than any parser's stack."""

    def build(shape: tuple[str, str], depth: int, closed: bool) -> str:
        opener, closer = shape
        return opener * depth + ("1" + closer * depth if closed else "")

    return st.builds(
        build,
        st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"k":', "}]")]),
        st.integers(1, max_depth),
        st.booleans(),
    )


def nested_value(leaf: Any, depth: int) -> Any:
    """``leaf`` inside ``depth`` lists (kept under the JSON encoder's recursion limit by the callers)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


junk_text = (
    st.text(max_size=40)
    | st.binary(max_size=40).map(lambda b: b.decode("utf-8", "replace"))
    | st.text(alphabet=PRINTABLE_ASCII, max_size=40)
    | repeated(st.text(min_size=1, max_size=4), 100, 40_000)
    | nested_text()
    | st.sampled_from(["", " ", "\n", "\x00", "{}", "[]", "null", "1" * 5000, '"' + "x" * 10 + '"', "\ufeff{}"])
)
"""Text that is almost never valid input: for bodies, messages and settings."""


# --- secrets ----------------------------------------------------------------------------------------------------

planted = st.sampled_from(PLANTED_FORMS)
"""A planted secret as a whole value."""


def with_secret(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``text`` followed by a separator and a planted secret (the secret ends the text, so it keeps its shape)."""
    return st.builds(
        lambda head, sep, secret: head + sep + secret, text, st.sampled_from([" ", "; ", "&", "\n"]), planted
    )


def secret_url(base: str) -> st.SearchStrategy[str]:
    """``base`` (an https URL) carrying a planted secret in its user info or query string."""

    def build(parts: tuple[str, str]) -> str:
        userinfo, query = parts
        return base.replace("https://", "https://" + userinfo, 1) + query

    return st.sampled_from(PLANTED_URL_PARTS).map(build)


# --- mutations --------------------------------------------------------------------------------------------------

MUTATION_COUNTS = st.sampled_from([0, 0, 1, 1, 2, 3])
"""How many mutations a valid input gets: none in about one case of three."""


@st.composite
def mutated(
    draw: st.DrawFn,
    base: Mapping[str, Any],
    targeted: Mapping[str, st.SearchStrategy[Any]],
    *,
    counts: st.SearchStrategy[int] = MUTATION_COUNTS,
) -> dict[str, Any]:
    """``base`` with a few mutations: a field dropped, given a targeted bad value (``targeted[field]``) or junk,
    renamed (case, spaces), or an extra field added (junk, or a secret)."""
    value = dict(base)
    for _ in range(draw(counts)):
        operation = draw(st.sampled_from(["drop", "targeted", "targeted", "junk", "rename", "extra"]))
        names = sorted(value) or ["_"]
        name = draw(st.sampled_from(names))
        if operation == "drop":
            value.pop(name, None)
        elif operation == "targeted" and name in targeted:
            value[name] = draw(targeted[name])
        elif operation in ("targeted", "junk"):
            value[name] = draw(json_values)
        elif operation == "rename" and name in value:
            spelled = draw(st.sampled_from([name.upper(), name.lower(), name + " ", " " + name, name.title()]))
            value[spelled] = value.pop(name)
        else:
            extra = draw(st.text(max_size=12) | st.sampled_from(["Authorization", "password", "sig", "id", "Id"]))
            value[extra] = draw(json_values | planted)
    return value


_PLANTED_PREFIXES = tuple(value[:12] for _, value in PLANTED)
_EDITS = ("cut", "insert", "delete", "double", "pad", "bom", "wrap", "nest", "replace", "whitespace")
_EDITS_AROUND = ("double", "bom", "wrap", "nest", "whitespace")  # edits that leave the text's inside as it is


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str:
    """One edit of ``text``: cut, splice junk in, drop a span, double it, pad it huge, prefix a BOM, or wrap it. A text
    that carries a planted secret is only edited around, so the secret keeps its shape."""
    carries_secret = any(prefix in text for prefix in _PLANTED_PREFIXES)
    operation = draw(st.sampled_from(_EDITS_AROUND if carries_secret else _EDITS))
    at = draw(st.integers(0, len(text)))
    if operation == "cut":
        return text[:at]
    if operation == "insert":
        return text[:at] + draw(st.text(max_size=8) | st.sampled_from([",", "}", "{", '"', "\\", "\x00"])) + text[at:]
    if operation == "delete":
        return text[:at] + text[at + draw(st.integers(1, 20)) :]
    if operation == "double":
        return text + text
    if operation == "pad":
        return text[:at] + " " * draw(st.integers(1, 20_000)) + text[at:]
    if operation == "bom":
        return "\ufeff" + text
    if operation == "wrap":
        return "[" + text + "]"
    if operation == "nest":
        depth = draw(st.integers(1, 5_000))
        return '{"a":' * depth + text + "}" * depth
    if operation == "replace":
        return text[:at] + draw(st.characters()) + text[at + 1 :]
    return draw(st.sampled_from([" ", "\n", "\t", "\r\n"])) + text + draw(st.sampled_from(["", " ", "\n"]))


# --- values the families share ----------------------------------------------------------------------------------

versions_valid = st.text(alphabet=HEX, min_size=32, max_size=32) | st.text(
    alphabet=HEX.upper(), min_size=32, max_size=32
)
versions_bad = st.one_of(
    st.text(alphabet=HEX, min_size=1, max_size=31),
    st.text(alphabet=HEX, min_size=33, max_size=64),
    st.text(alphabet=string.ascii_letters, min_size=32, max_size=32),
    st.sampled_from(["", " ", "٣" * 32, "\x00" * 32, "a" * 31 + "\x00", "g" * 32, "0x" + "a" * 30]),
    repeated(st.sampled_from(["a", "é", "0"]), 100, 5_000),
    st.integers(),
    st.none(),
    json_values,
    planted,
)
ids_bad = st.one_of(
    st.sampled_from(["", " ", "\x00", "\t", "a\x00b", "..", "-x", "_x", "é", "\u202e", "a/b", "a b", "a#b"]),
    repeated(st.sampled_from(["a", "0", "é", "\x00"]), 129, 20_000),
    st.text(min_size=1, max_size=40),
    st.integers(),
    st.none(),
    json_values,
    planted,
    with_secret(st.sampled_from(["id", "request"])),
)
"""Request and event ids that are not valid (empty, long, non-ASCII, NUL, wrong type), or a secret (the planted JWT,
whose dots a request id may not have)."""
ids_valid = st.uuids().map(str) | st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=39),
)
"""Ids that are valid request ids (and usable event ids): a UUID, or 1-40 letters, digits and '-'."""


# --- break-glass ------------------------------------------------------------------------------------------------


def current(values: Callable[[], Sequence[str]], fallback: str) -> st.SearchStrategy[str]:
    """One of ``values()`` as they are when it is drawn (state outside Hypothesis, such as the versions a key has now,
    which a family that rotates changes between cases), or ``fallback`` when there is none. It is picked by an
    integer, so the choices Hypothesis records are of one type whatever the state: a replay stays consistent."""

    def pick(index: int) -> str:
        found = values()
        return found[index % len(found)] if found else fallback

    return st.integers(0, 255).map(pick)


glass_versions_bad = versions_bad | with_secret(st.sampled_from(["v", "a" * 31, "0" * 32]))
"""``compromised_version`` values that are not version ids: ``versions_bad``, and text ending in a planted secret after
a separator (a newline too, which ``json.dumps`` turns into the letters ``\\n`` next to the secret)."""
flags_bad: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["true", "false", 1, 0, None, [], {}, "yes", "True"]),
    json_values,
    with_secret(st.sampled_from(["true", "yes"])),
)
"""Values of a true/false field that are not booleans (null too: an absent flag is false, a null one is bad)."""


_STARTED = int(time.time())  # once: a strategy whose bounds moved between cases would make Hypothesis's replay flaky
tokens_foreign = st.builds(
    lambda when, digest: f"{when:010d}.{digest}",
    st.one_of(
        st.integers(_STARTED - 240, _STARTED + 30),
        st.integers(0, 9_999_999_999),
        st.sampled_from([0, _STARTED - 301, _STARTED - 3600, _STARTED + 3600, 9_999_999_999]),
    ),
    st.text(alphabet=HEX, min_size=40, max_size=40),
)
"""Confirmations shaped like the service's (10 digits of issue time, '.', 40 lowercase hex digits) that it did not
issue: a time fresh when the session started (within the 5 minutes a token is valid), one long past, or one in the
future, each with a digest the service would not compute (one in 16**40 would match)."""


tokens_bad = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            ".",
            "0" * 10 + ".",
            "0" * 10 + "." + "a" * 39,
            "0" * 10 + "." + "a" * 41,
            "0" * 9 + "." + "a" * 40,
            "0" * 11 + "." + "a" * 40,
            "0" * 10 + "." + "A" * 40,
            "0" * 10 + "a" * 40,
            "0" * 10 + "." + "g" * 40,
            "\u0663" * 10 + "." + "a" * 40,
            "0" * 10 + "." + "a" * 40 + "\n",
            " " + "0" * 10 + "." + "a" * 40,
            "0" * 10 + "." + "a" * 40 + "\x00",
        ]
    ),
    tokens_foreign.map(str.upper),
    tokens_foreign.flatmap(text_mutation),
    repeated(st.sampled_from(["0", "a", "."]), 60, 20_000),
    st.integers(),
    st.booleans(),
    json_values,
    planted,
    with_secret(st.sampled_from(["token", "1700000000.ab"])),
)
"""Confirmations that are not tokens (most of them; an edit may leave one well-formed): cut, padded, upper case, a
digit that is not ASCII, a trailing newline, not text, null, a planted secret."""

"""rotation/auth.py: the Entra ID app-role check behind App Service authentication, and the Functions auth level.

Pure: headers and settings are plain mappings. The principals are shaped as App Service writes them (Learn, "Work with
user identities in Azure App Service authentication": base64 JSON with auth_typ, name_typ, role_typ and claims), and
Hypothesis feeds anything else in: every input ends in None or a Refusal, never an exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rotation.auth import (
    MAX_PRINCIPAL_CHARS,
    MISSING_APP_ROLE,
    ROLE_CLAIM_URI,
    ROLE_READ,
    ROLE_SUBMIT,
    UNAUTHENTICATED,
    HttpAuth,
    Principal,
    Refusal,
    authorize,
    functions_auth_level,
    http_auth,
    principal,
)
from rotation.errors import ConfigError

NAME_TYP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly9yb3RhdGlvbiJ9.c2lnbmF0dXJlLXZhbHVl"


def encoded(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def principal_header(
    *roles: str,
    name: str | None = "alice@contoso.com",
    role_claim: str = "roles",
    auth_typ: str = "aad",
    role_typ: str = ROLE_CLAIM_URI,
) -> dict[str, str]:
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "5b5450db"}]
    claims += [{"typ": NAME_TYP, "val": name}] if name is not None else []
    claims += [{"typ": role_claim, "val": role} for role in roles]
    data = {"auth_typ": auth_typ, "name_typ": NAME_TYP, "role_typ": role_typ, "claims": claims}
    return {"x-ms-client-principal": encoded(data)}


# The roles: Submit for POST /api/rotations; Read (or Submit) for the GETs.


@pytest.mark.parametrize(
    ("roles", "needed", "allowed"),
    [
        ((ROLE_SUBMIT,), ROLE_SUBMIT, True),
        ((ROLE_SUBMIT,), ROLE_READ, True),  # a submitter may read
        ((ROLE_READ,), ROLE_READ, True),
        ((ROLE_READ,), ROLE_SUBMIT, False),
        ((ROLE_READ, ROLE_SUBMIT), ROLE_SUBMIT, True),
        (("Other.Role",), ROLE_READ, False),
        ((), ROLE_READ, False),
        (("rotations.submit",), ROLE_SUBMIT, False),  # app role values are matched exactly
        ((" Rotations.Submit",), ROLE_SUBMIT, False),
    ],
)
def test_each_route_needs_its_role(roles: tuple[str, ...], needed: str, allowed: bool) -> None:
    refusal = authorize(principal_header(*roles), needed)
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None and (refusal.status, refusal.code) == (403, MISSING_APP_ROLE)


@pytest.mark.parametrize("role_claim", ["roles", ROLE_CLAIM_URI, "custom-role-type"])
def test_a_role_claim_is_found_by_roles_the_long_uri_or_the_principals_role_typ(role_claim: str) -> None:
    headers = principal_header(ROLE_SUBMIT, role_claim=role_claim, role_typ="custom-role-type")
    assert authorize(headers, ROLE_SUBMIT) is None


def test_a_claim_of_another_type_with_the_role_as_its_value_is_no_role() -> None:
    assert authorize(principal_header(ROLE_SUBMIT, role_claim="groups"), ROLE_SUBMIT) is not None
    assert authorize(principal_header(ROLE_SUBMIT, role_claim="scp"), ROLE_SUBMIT) is not None


@pytest.mark.parametrize("name", ["X-MS-CLIENT-PRINCIPAL", "x-ms-client-principal", "X-Ms-Client-Principal"])
def test_the_header_name_is_matched_in_any_case(name: str) -> None:
    value = principal_header(ROLE_READ)["x-ms-client-principal"]
    assert authorize({name: value, "content-type": "application/json"}, ROLE_READ) is None


def test_a_missing_header_is_401_saying_app_service_authentication_puts_it_there() -> None:
    refusal = authorize({"authorization": f"Bearer {TOKEN}"}, ROLE_READ)
    assert refusal is not None and (refusal.status, refusal.code) == (401, UNAUTHENTICATED)
    assert "App Service authentication puts it there" in refusal.message
    assert TOKEN not in refusal.message and "eyJ" not in refusal.message


def test_two_spellings_of_the_header_with_different_values_are_refused() -> None:
    headers = {
        "x-ms-client-principal": principal_header(ROLE_READ)["x-ms-client-principal"],
        "X-MS-CLIENT-PRINCIPAL": principal_header(ROLE_SUBMIT)["x-ms-client-principal"],
    }
    refusal = authorize(headers, ROLE_SUBMIT)
    assert refusal is not None and refusal.status == 401 and "more than once" in refusal.message


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not base64!",
        base64.b64encode(b"\xff\xfe not utf-8").decode(),
        base64.b64encode(b"{not json").decode(),
        encoded([1, 2]),
        encoded({"auth_typ": "aad"}),  # no claims
        encoded({"auth_typ": "aad", "claims": {"typ": "roles"}}),
        encoded({"claims": []}),  # no provider
        encoded({"auth_typ": 7, "claims": []}),
        base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # nesting deep enough for a RecursionError
        base64.b64encode(b"1" * 5000).decode(),  # more digits than int() converts
    ],
)
def test_an_undecodable_header_is_401_and_never_echoed(value: str) -> None:
    refusal = authorize({"x-ms-client-principal": value}, ROLE_READ)
    assert refusal is not None and (refusal.status, refusal.code) == (401, UNAUTHENTICATED)
    assert value.strip() == "" or value[:20] not in refusal.message


def test_a_header_over_16_kib_is_401_before_it_is_decoded() -> None:
    padding = [{"typ": "x", "val": "y" * 100}] * 200
    big = principal_header(ROLE_SUBMIT)
    data = json.loads(base64.b64decode(big["x-ms-client-principal"]))
    data["claims"] += padding
    value = encoded(data)
    assert len(value) > MAX_PRINCIPAL_CHARS
    refusal = authorize({"x-ms-client-principal": value}, ROLE_SUBMIT)
    assert refusal is not None and refusal.status == 401 and "16 KiB" in refusal.message


def test_unpadded_base64_is_accepted() -> None:
    value = principal_header(ROLE_READ)["x-ms-client-principal"].rstrip("=")
    assert authorize({"x-ms-client-principal": value}, ROLE_READ) is None


def test_a_403_names_the_role_needed_and_the_callers_name_and_no_token() -> None:
    refusal = authorize(principal_header(ROLE_READ, name="bob@contoso.com"), ROLE_SUBMIT)
    assert refusal is not None and refusal.status == 403
    assert "'bob@contoso.com'" in refusal.message and "'Rotations.Submit'" in refusal.message
    read = authorize(principal_header(name="bob@contoso.com"), ROLE_READ)
    assert read is not None and "'Rotations.Read' (or Rotations.Submit, which includes it)" in read.message


def test_the_callers_name_is_clipped_and_redacted() -> None:
    refusal = authorize(principal_header(name="x" * 10_000), ROLE_SUBMIT)
    assert refusal is not None and "x" * 80 + "\u2026" in refusal.message and "x" * 81 not in refusal.message
    refusal = authorize(principal_header(name=f"Bearer {TOKEN}"), ROLE_SUBMIT)
    assert refusal is not None and TOKEN not in refusal.message and "<redacted>" in refusal.message
    refusal = authorize(principal_header(name="evil\r\nSet-Cookie: x"), ROLE_SUBMIT)
    assert refusal is not None and "\r" not in refusal.message and "\n" not in refusal.message


def test_without_a_name_claim_the_caller_is_named_by_another_claim_or_not_at_all() -> None:
    data = {
        "auth_typ": "aad",
        "name_typ": NAME_TYP,
        "role_typ": ROLE_CLAIM_URI,
        "claims": [{"typ": "appid", "val": "11111111-2222-3333-4444-555555555555"}],
    }
    found = principal({"x-ms-client-principal": encoded(data)})
    assert isinstance(found, Principal) and found.name == "11111111-2222-3333-4444-555555555555"
    refusal = authorize(principal_header(name=None), ROLE_SUBMIT)
    assert refusal is not None and "the caller '5b5450db'" in refusal.message  # its object id
    nameless = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": ROLE_READ}]}
    refusal = authorize({"x-ms-client-principal": encoded(nameless)}, ROLE_SUBMIT)
    assert refusal is not None and "(no name claim)" in refusal.message


def test_claims_that_are_not_text_are_ignored() -> None:
    """A claim with a number, null or object value (data-api-builder#843 shows numbers in the wild) is no role."""
    data = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "roles", "val": 1},
            {"typ": "roles", "val": None},
            {"typ": "roles", "val": [ROLE_SUBMIT]},
            {"typ": ["roles"], "val": ROLE_SUBMIT},
            "roles",
            None,
            {"typ": "roles", "val": ROLE_READ},
        ],
    }
    found = principal({"x-ms-client-principal": encoded(data)})
    assert isinstance(found, Principal) and found.roles == frozenset({ROLE_READ})


def test_only_microsoft_entra_id_callers_are_accepted() -> None:
    refusal = authorize(principal_header(ROLE_SUBMIT, auth_typ="google"), ROLE_SUBMIT)
    assert refusal is not None and refusal.status == 403 and "'google'" in refusal.message
    assert authorize(principal_header(ROLE_SUBMIT, auth_typ="AAD"), ROLE_SUBMIT) is None


# Malformed input never raises.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
CLAIM = st.fixed_dictionaries(
    {
        "typ": st.sampled_from(["roles", ROLE_CLAIM_URI, "name", "groups"]) | JSON,
        "val": st.sampled_from([ROLE_SUBMIT, ROLE_READ]) | JSON,
    }
)
SHAPED = st.fixed_dictionaries(
    {"claims": st.lists(CLAIM | JSON, max_size=5)},
    optional={"auth_typ": st.just("aad") | JSON, "name_typ": JSON, "role_typ": JSON},
)


def header_values() -> st.SearchStrategy[str]:
    as_base64 = st.builds(lambda b: base64.b64encode(b).decode(), st.binary(max_size=200))
    as_json = st.builds(encoded, JSON | SHAPED)
    return st.text(max_size=200) | as_base64 | as_json


@given(value=header_values(), role=st.sampled_from([ROLE_SUBMIT, ROLE_READ]) | st.text(max_size=20))
@example(value=encoded({"auth_typ": "aad", "claims": [{"typ": "roles", "val": ROLE_SUBMIT}]}), role=ROLE_READ)
def test_any_header_value_ends_in_none_or_a_refusal(value: str, role: str) -> None:
    refusal = authorize({"x-ms-client-principal": value}, role)
    assert refusal is None or (isinstance(refusal, Refusal) and refusal.status in (401, 403))
    if refusal is not None and len(value) >= 12:
        assert value not in refusal.message


@given(headers=st.dictionaries(st.text(max_size=30) | st.just("X-MS-CLIENT-PRINCIPAL"), header_values(), max_size=4))
def test_any_headers_end_in_none_or_a_refusal(headers: dict[str, str]) -> None:
    refusal = authorize(headers, ROLE_SUBMIT)
    assert refusal is None or refusal.status in (401, 403)


@given(value=st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_values_that_are_not_even_text_are_refused(value: Any) -> None:
    refusal = authorize({"x-ms-client-principal": value}, ROLE_READ)
    assert refusal is not None and refusal.status == 401


def test_a_header_mapping_that_raises_is_refused() -> None:
    class Broken(dict[str, str]):
        def items(self) -> Any:
            raise RuntimeError("boom")

    refusal = authorize(Broken(), ROLE_READ)
    assert refusal is not None and refusal.status == 401


# The Functions auth level, chosen at import time: anonymous only for entra with App Service authentication on.


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({}, "function"),
        ({"ROTATION_HTTP_AUTH": "keys"}, "function"),
        ({"ROTATION_HTTP_AUTH": "keys", "WEBSITE_AUTH_ENABLED": "True"}, "function"),
        ({"ROTATION_HTTP_AUTH": "entra"}, "function"),  # forgeable header: keys stay on
        ({"ROTATION_HTTP_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "False"}, "function"),
        ({"ROTATION_HTTP_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "1"}, "function"),
        ({"ROTATION_HTTP_AUTH": "entraid", "WEBSITE_AUTH_ENABLED": "True"}, "function"),
        ({"ROTATION_HTTP_AUTH": "anonymous", "WEBSITE_AUTH_ENABLED": "True"}, "function"),
        ({"ROTATION_HTTP_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "True"}, "anonymous"),
        ({"ROTATION_HTTP_AUTH": "ENTRA", "WEBSITE_AUTH_ENABLED": "true"}, "anonymous"),
        ({"ROTATION_HTTP_AUTH": " Entra ", "WEBSITE_AUTH_ENABLED": " TRUE "}, "anonymous"),
    ],
)
def test_the_functions_auth_level(env: dict[str, str], level: str) -> None:
    assert functions_auth_level(env) == level


def test_the_functions_auth_level_never_raises() -> None:
    class Broken(dict[str, str]):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    assert functions_auth_level(Broken()) == "function"
    assert functions_auth_level({"ROTATION_HTTP_AUTH": 7, "WEBSITE_AUTH_ENABLED": True}) == "function"  # type: ignore[dict-item]


@given(
    mode=st.sampled_from(["entra", "Entra", " ENTRA", "keys", ""]) | st.text(max_size=10),
    enabled=st.sampled_from(["True", "true", "False", ""]) | st.text(max_size=6),
)
def test_anonymous_exactly_when_the_settings_say_entra(mode: str, enabled: str) -> None:
    """The import-time level and the settings' parse never disagree: anonymous functions always check app roles."""
    env = {"ROTATION_HTTP_AUTH": mode, "WEBSITE_AUTH_ENABLED": enabled}
    try:
        parsed: HttpAuth | None = http_auth(env)
    except ConfigError:
        parsed = None
    assert (functions_auth_level(env) == "anonymous") == (parsed is HttpAuth.ENTRA)

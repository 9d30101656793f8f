"""Endpoint URLs checked the way the HTTP transport will read them, so a bad URL is refused at start, not at send time.

requests and urllib3 take a URL without complaint when a client is built and fail only when a request is sent::

    https://kv..vault.azure.net/keys/k      ValueError at send: empty DNS label (the IDNA codec)
    https://[x/api                          ValueError from urlsplit itself
    https://a.com:99999/x                   ValueError: port out of range

``split_https_url`` is the one check for every endpoint the service is given (the outcome-events topic, key URLs,
vault URLs): https only; a host of DNS labels of 1-63 letters, digits or '-' (not starting or ending with '-'), at
most 253 characters, no empty label, IDNA-encodable when not ASCII (as requests encodes it), or an IP address; an
optional port 1-65535; and no user name or password, query or fragment, which is where secrets get pasted. It
raises ``ConfigError`` and echoes only the host, never the whole URL: the caller names the URL, already redacted.
This module must never resolve a name or touch the network.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

import idna

from rotation.errors import ConfigError
from rotation.redact import clipped

MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def split_https_url(url: str, *, what: str, fix: str) -> SplitResult:
    """``urlsplit(url)`` when the transport will accept ``url`` as an https endpoint; ``ConfigError`` otherwise.

    Each message reads ``"{what} {problem}; {fix}"``: ``what`` names the URL (e.g. ``"ROTATION_EVENTS_ENDPOINT='...'"``,
    redacted and clipped by the caller) and ``fix`` says what to write instead.
    """

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"{what} {problem}; {fix}")

    if any(c.isspace() or not c.isprintable() for c in url):
        raise refuse("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"is not a valid URL ({clipped(str(exc), 80)})") from exc
    if parts.scheme != "https":
        raise refuse("must use https")
    if parts.username is not None:
        raise refuse("must not carry a user name or password")
    if parts.query:
        raise refuse("must not carry a query string")
    if parts.fragment:
        raise refuse("must not carry a fragment ('#...')")
    if not parts.hostname:
        raise refuse("has no host")
    if port == 0:
        raise refuse("has port 0; a port is 1-65535, or left out for 443")
    problem = _host_problem(parts.hostname, bracketed=parts.netloc.startswith("["))
    if problem is not None:
        raise refuse(f"has an invalid host {clipped(parts.hostname, 80)!r}: {problem}")
    return parts


def _host_problem(host: str, *, bracketed: bool) -> str | None:
    """Why the transport would refuse ``host`` (as ``urlsplit`` gives it: lowercase, no brackets), or None."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "only an IPv6 address may be written in brackets"
        return None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
            return f"it is not a valid internationalised domain name ({clipped(str(exc), 80)})"
    if len(host) > MAX_HOST_LENGTH:
        return f"it is {len(host)} characters long; a DNS name is at most {MAX_HOST_LENGTH}"
    labels = host.split(".")
    if "" in labels:
        return "it has an empty label (two dots in a row, or a leading or trailing dot)"
    bad = next((label for label in labels if not _LABEL.fullmatch(label)), None)
    if bad is not None:
        return f"its label {clipped(bad, 80)!r} is not 1-63 letters, digits or '-' (not starting or ending with '-')"
    return None

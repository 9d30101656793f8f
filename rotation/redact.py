"""Secrets out of text before it is shown: in error messages, log records and ledger rows.

``redacted`` replaces anything shaped like a secret with ``<redacted>`` and keeps the rest, so a message still says
which URL or setting was wrong::

    https://t.eventgrid.azure.net/api/events?sv=2022&sig=abc   ->  ...?sv=2022&sig=<redacted>
    AccountName=st;AccountKey=abc==;EndpointSuffix=...         ->  AccountName=st;AccountKey=<redacted>;...
    Authorization: Bearer eyJ0eXAi...                          ->  Authorization: <redacted>

``clipped`` is ``redacted`` cut to a length, for echoing a value a user supplied. Both are pure and best effort: they
recognise shapes, not secrets, so callers must still never pass a secret they know of (a key setting's value).
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# name=value pairs of connection strings, SAS query strings, Functions keys and OAuth forms; bearer tokens; JWTs; and
# padded base64 blobs of over 40 characters (Event Grid topic keys, storage account keys).
_SECRET_PATTERNS = (
    re.compile(
        r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig|code|key|password|pwd|secret|client_secret"
        r"|token|access_token|refresh_token)=[^;&\s\"']+"
    ),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?<=://)[^/@\s]+(?=@)"),  # the user name and password of a URL
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={1,2}(?![A-Za-z0-9+/=])"),
)


def redacted(text: str) -> str:
    """``text`` with anything shaped like a key, signature, token or password replaced by ``<redacted>``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact_match, text)
    return text


def clipped(text: str, limit: int = 200) -> str:
    """``redacted(text)``, cut after ``limit`` characters and then marked with ``…`` when it was longer."""
    text = redacted(text)
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object, limit: int = 80) -> str:
    """A value from outside, quoted for an error message: text redacted and clipped *before* it is quoted (quoting
    turns a newline into the letters ``\n``, which would hide the secret after it from the redactor); anything else
    only by its ``repr``, clipped."""
    if isinstance(value, str):
        return repr(clipped(value, limit))
    text = repr(value) if isinstance(value, (int, float, bool, type(None))) else f"<{type(value).__name__}>"
    return text[:limit]


def described(value: object, limit: int = 100) -> str:
    """A value from outside, for a log line: text ``clipped``, anything else only named by its type (the ``str`` of a
    nested list could be megabytes long, or raise ``RecursionError``)."""
    return clipped(value, limit) if isinstance(value, str) else f"<{type(value).__name__}>"


def _redact_match(match: re.Match[str]) -> str:
    """``name=<redacted>`` for a name=value pair (the name says what was there), ``<redacted>`` otherwise."""
    return f"{match[1]}={REDACTED}" if match.re.groups else REDACTED

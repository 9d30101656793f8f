"""Parse Key Vault's Event Grid events into the key they are about: a hint, never a source of truth.

The parser is tolerant because Microsoft's own samples are not tidy: keys with stray spaces (``"ObjectName "``),
versions with a leading space, ``NBF``/``EXP`` as strings or numbers, and the older camelCase field names. The key's
vault and name come from ``data.Id`` when it parses, and from ``VaultName``/``ObjectName``/``subject`` otherwise.

It never decides anything: the trigger checks the result against ``ROTATION_TARGETS``, and the engine re-reads Key Vault
before acting. Anything it cannot use raises ``EventRejected`` with a reason for the log; the event is then
acknowledged and dropped, never retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rotation.clouds import DEFAULT_CLOUD
from rotation.model import KEY_VERSION_PATTERN, KeyRef, Trigger
from rotation.redact import quoted

KEY_EVENT_TYPES: Mapping[str, Trigger] = {
    "Microsoft.KeyVault.KeyNearExpiry": Trigger.KEY_NEAR_EXPIRY,
    "Microsoft.KeyVault.KeyExpired": Trigger.KEY_EXPIRED,
    "Microsoft.KeyVault.KeyNewVersionCreated": Trigger.KEY_NEW_VERSION_CREATED,
}
MAX_EVENT_ID = 190  # Event Grid's ids are far shorter; the request id is derived from it (model.event_request_id)


class EventRejected(ValueError):
    """The event is not one this service acts on; the message says why."""


@dataclass(frozen=True)
class KeyEvent:
    event_id: str
    trigger: Trigger
    key: KeyRef
    version: str | None


def parse_key_event(
    *, event_id: object, event_type: object, subject: object, data: Any, vault_suffix: str = DEFAULT_CLOUD.vault_suffix
) -> KeyEvent:
    """The key a Key Vault key event is about; an event that names only its vault is taken to be of a vault under
    ``vault_suffix`` (the app's cloud's). Raises ``EventRejected`` for anything else."""
    if not isinstance(event_id, str) or not event_id.strip():
        raise EventRejected(f"the event has no id (got {quoted(event_id, 60)}); Event Grid gives every event one")
    if len(event_id) > MAX_EVENT_ID or not all(" " <= char <= "~" for char in event_id):
        raise EventRejected(
            f"event id {quoted(event_id, 60)} is not 1-{MAX_EVENT_ID} printable ASCII characters, as Event Grid's are"
        )
    trigger = KEY_EVENT_TYPES.get(event_type.strip()) if isinstance(event_type, str) else None
    if trigger is None:
        raise EventRejected(f"event type {quoted(event_type, 100)} is not a Key Vault key event this service handles")
    if not isinstance(data, Mapping):
        raise EventRejected(f"event {quoted(event_id, 100)} has no data object")
    fields = {str(k).strip().lower(): v for k, v in data.items()}
    object_type = _text(fields.get("objecttype"))
    if object_type is not None and object_type.lower() != "key":
        raise EventRejected(f"event {quoted(event_id, 100)} is about a {quoted(object_type, 40)}, not a key")
    key, version = _from_id(_text(fields.get("id")))
    if key is None:
        vault = _text(fields.get("vaultname"))
        name = _text(fields.get("objectname")) or _text(subject)
        if not vault or not name:
            raise EventRejected(
                f"event {quoted(event_id, 100)} names no vault and key (no usable Id, VaultName or ObjectName)"
            )
        try:
            key = KeyRef.parse(f"https://{vault}.{vault_suffix}/keys/{name}")
        except ValueError as exc:  # KeyRef.parse names what is wrong with the vault or key name
            raise EventRejected(f"event {quoted(event_id, 100)}: {exc}") from exc
    version = version or _text(fields.get("version"))
    if version is not None and KEY_VERSION_PATTERN.fullmatch(version) is None:
        raise EventRejected(
            f"event {quoted(event_id, 100)} names version {quoted(version, 80)}, not a Key Vault version id"
        )
    return KeyEvent(event_id=event_id, trigger=trigger, key=key, version=version)


def _text(value: Any) -> str | None:
    """A scalar field as stripped text (Microsoft's samples send NBF and EXP as strings or numbers); None for
    anything else, such as a nested object, which no Key Vault event carries."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text or None


def _from_id(kid: str | None) -> tuple[KeyRef | None, str | None]:
    """``https://<vault>/keys/<name>[/<version>]`` → (key, version); (None, None) when it does not parse."""
    if not kid:
        return None, None
    try:
        split = urlsplit(kid)  # ValueError for e.g. an unclosed "[" in the host
        parts = [p for p in split.path.split("/") if p]
        if split.scheme != "https" or len(parts) not in (2, 3) or parts[0] != "keys":
            return None, None
        key = KeyRef.parse(f"https://{split.netloc}/keys/{parts[1]}")
    except ValueError:
        return None, None
    return key, parts[2] if len(parts) == 3 else None

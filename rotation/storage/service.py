"""How the storage adapters report a failure of the storage service itself: one translation, no secrets.

Each adapter handles the answers that mean something to it (a lease already held, a row that changed, a queue that
does not exist yet) and wraps every other azure-core error in ``StorageUnavailable``, chained, so callers deal with one
class: a transient fault of the app's own storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import AzureError

from rotation.errors import StorageUnavailable
from rotation.redact import redacted


def service_error(exc: BaseException) -> str:
    """The service's error code (or the exception's class) and first message line; never headers, so no secrets."""
    code = getattr(exc, "error_code", None)
    first_line = (str(exc).splitlines() or [""])[0]
    return redacted(f"{code or type(exc).__name__}: {first_line}")[:300]


@contextmanager
def unavailable(action: str) -> Iterator[None]:
    """Raise ``StorageUnavailable`` naming ``action`` for any azure-core error that escapes the block."""
    try:
        yield
    except AzureError as exc:
        raise StorageUnavailable(
            f"the app's storage (AzureWebJobsStorage) failed to {action}: {service_error(exc)}"
        ) from exc

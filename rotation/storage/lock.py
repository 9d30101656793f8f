"""The per-key lock: one blob lease per key, so one worker at a time reconciles a key.

::

    blob  rotation-locks/<vault host>/<key name, lower case>   a lease of ``duration`` seconds, renewed while held

A worker killed mid-rotation never releases its lease; the lease then expires ``duration`` seconds after its last
renewal and the next worker acquires it. Nothing here waits for that: ``acquire`` fails at once with ``LockHeld`` and
the caller re-enqueues the request with a delay.

Raises ``LockHeld``, ``LockLost`` and ``StorageUnavailable``; nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from types import TracebackType

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from rotation.errors import LockHeld, LockLost
from rotation.log import Event, emit
from rotation.model import KeyRef
from rotation.storage.service import service_error, unavailable

LOCKS_CONTAINER = "rotation-locks"
MIN_LEASE, MAX_LEASE = 15, 60  # Azure's limits for a finite blob lease, in seconds


def lock_blob_name(key: KeyRef) -> str:
    """``<vault host>/<key name>``, the name in lower case: two spellings of one key share one lock."""
    return f"{key.vault_host}/{key.name.lower()}"


class KeyLock:
    """A blob lease that lets one worker at a time rotate a key; use it as a context manager.

    ``acquire`` raises ``LockHeld`` at once when another worker holds the lease. While held, a daemon thread renews
    the lease every ``renew_every`` seconds (default: a third of ``duration``). If storage refuses a renewal, or none
    has got through for three quarters of ``duration``, ``lost`` turns true (and ``rotation.lock_lost`` is logged
    once the renewer notices); call ``raise_if_lost()`` before each write.
    """

    def __init__(
        self, locks: ContainerClient, key: KeyRef, *, duration: int = MAX_LEASE, renew_every: float | None = None
    ) -> None:
        if not MIN_LEASE <= duration <= MAX_LEASE:
            raise ValueError(f"lock duration must be {MIN_LEASE}-{MAX_LEASE} whole seconds (Azure's lease limits)")
        interval = duration / 3 if renew_every is None else renew_every
        if not 0 < interval <= duration / 2:
            raise ValueError(f"renew_every must be more than 0 and at most half of duration ({duration})")
        self.key = key
        self.blob_name = lock_blob_name(key)
        self._container = locks
        self._blob = locks.get_blob_client(self.blob_name)
        self._lease = BlobLeaseClient(self._blob)
        self._duration = duration
        self._renew_every = interval
        self._held = False
        self._renewed_at = 0.0  # time.monotonic() of the last acquire or renewal that storage confirmed
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """True between a successful ``acquire`` and ``release`` (even if the lease was since lost)."""
        return self._held

    @property
    def lost(self) -> bool:
        """True once storage refused a renewal, or no renewal got through for so long that the lease may have
        expired (a renewal can hang for minutes inside the storage client's own retries): another worker may hold
        the key now."""
        if self._lost.is_set():
            return True
        return self._held and time.monotonic() - self._renewed_at >= self._duration * 3 / 4  # a quarter as margin

    def raise_if_lost(self) -> None:
        """Raise ``LockLost`` when the lease may no longer be ours; call it before every write."""
        if self.lost:
            raise LockLost(f"the lock on {self.key.id} was lost (renewal failed); stop and let the queue retry")

    def busy(self) -> bool:
        """True when some worker holds the key's lease now (a read; takes nothing)."""
        with unavailable(f"read the lock on {self.key.id}"):
            try:
                return bool(self._blob.get_blob_properties().lease.status == "locked")
            except ResourceNotFoundError:
                return False

    def acquire(self) -> None:
        """Take the key's lease and start renewing it; ``LockHeld`` if another worker has it."""
        if self._held:
            raise RuntimeError(f"this KeyLock already holds {self.blob_name}")
        with unavailable(f"take the lock on {self.key.id}"):
            try:
                self._take_lease()
            except ResourceNotFoundError:
                self._create_lock_blob()
                self._take_lease()
        self._renewed_at = time.monotonic()
        self._held = True
        self._stop.clear()
        self._lost.clear()
        self._renewer = threading.Thread(target=self._renew, name=f"lock-renewer {self.blob_name}", daemon=True)
        self._renewer.start()
        emit(Event.LOCK_ACQUIRED, f"the key's lease {self.blob_name} is held", key=self.key, lock=self.blob_name)

    def release(self) -> None:
        """Stop renewing and release the lease. A failed release is logged: the lease then simply expires."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if not self._held:
            return
        self._held = False
        try:
            self._lease.release()
        except Exception as exc:  # noqa: BLE001 -- the lease expires by itself; a release must never mask the outcome
            error = service_error(exc)
            emit(
                Event.LOCK_RELEASE_FAILED,
                f"the key's lease could not be released and expires by itself ({error})",
                key=self.key,
                level=logging.WARNING,
                lock=self.blob_name,
                error=error,
            )
            return
        emit(Event.LOCK_RELEASED, f"the key's lease {self.blob_name} is released", key=self.key, lock=self.blob_name)

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _take_lease(self) -> None:
        try:
            self._lease.acquire(lease_duration=self._duration)
        except ResourceExistsError as exc:
            if getattr(exc, "error_code", None) != "LeaseAlreadyPresent":
                raise
            raise LockHeld(f"another worker holds the lock on {self.key.id}; retry after it finishes") from exc

    def _create_lock_blob(self) -> None:
        try:
            self._create_empty_blob()
        except ResourceNotFoundError:  # the container is missing too
            with suppress(ResourceExistsError):
                self._container.create_container()
            self._create_empty_blob()

    def _create_empty_blob(self) -> None:
        with suppress(ResourceExistsError):  # another worker created it first
            self._blob.upload_blob(b"", overwrite=False)

    def _renew(self) -> None:
        """Renew until released. Storage refusing the renewal (the lease was broken or taken) loses the lock at once;
        a failure to reach storage is retried as long as the lease cannot have expired yet."""
        while not self._stop.wait(self._renew_every):
            error: Exception
            try:
                self._lease.renew()
                self._renewed_at = time.monotonic()
                continue
            except HttpResponseError as exc:
                refused = exc.status_code is not None and exc.status_code < 500
                error = exc
            except Exception as exc:  # noqa: BLE001 -- a renewer that dies quietly is exactly the failure to report
                refused = False
                error = exc
            detail = service_error(error)
            if refused or self.lost:
                emit(
                    Event.LOCK_LOST,
                    f"the key's lease was lost ({detail}); its holder writes nothing more",
                    key=self.key,
                    level=logging.ERROR,
                    lock=self.blob_name,
                    error=detail,
                )
                self._lost.set()  # after the event, so whoever sees the flag can also find the event
                return
            emit(
                Event.LOCK_RENEWAL_FAILED,
                f"renewing the key's lease failed ({detail}); retrying",
                key=self.key,
                level=logging.WARNING,
                lock=self.blob_name,
                error=detail,
            )

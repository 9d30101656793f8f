"""The Functions app's state, all in the storage account behind ``AzureWebJobsStorage`` (Azurite locally).

::

    queue  rotation-requests(-poison)               RotationQueue   rotation/storage/queue.py
    queue  key-events-poison (watched only)         RotationQueue   rotation/storage/queue.py
    blob   rotation-locks/<vault host>/<key name>   KeyLock         rotation/storage/lock.py
    table  rotationledger                           Ledger          rotation/storage/ledger.py
    table  rotationevidence                         VersionEvidence rotation/storage/evidence.py
    the account behind the settings                 StorageAccount  rotation/storage/account.py

Each part takes ``KeyRef`` and ``RotationRequest``, never key URLs as strings, and raises only the classes of
``rotation.errors`` its docstring names: every failure of the storage service itself is ``StorageUnavailable``.
This package must never log or store a token, an account key or a connection string; never wrap azure-core's HTTP
retries in a loop of its own; and never read the clock for a stored timestamp (callers pass ``at``).
"""

from rotation.storage.account import StorageAccount
from rotation.storage.evidence import EVIDENCE_TABLE, VersionEvidence
from rotation.storage.ledger import LEDGER_TABLE, MAX_ACCOUNTS_JSON_CHARS, Ledger, LedgerEntry, LedgerStatus
from rotation.storage.lock import LOCKS_CONTAINER, KeyLock
from rotation.storage.queue import KEY_EVENTS_QUEUE, POISON_QUEUE, REQUESTS_QUEUE, RotationQueue

__all__ = [
    "EVIDENCE_TABLE",
    "KEY_EVENTS_QUEUE",
    "LEDGER_TABLE",
    "LOCKS_CONTAINER",
    "MAX_ACCOUNTS_JSON_CHARS",
    "POISON_QUEUE",
    "REQUESTS_QUEUE",
    "KeyLock",
    "Ledger",
    "LedgerEntry",
    "LedgerStatus",
    "RotationQueue",
    "StorageAccount",
    "VersionEvidence",
]

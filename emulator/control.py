"""What tests steer and observe: the clock, latency, fault rules, the call log, and token buckets.

``Control`` is shared by every listener of one emulator. All of it is thread-safe: listeners serve requests on many
threads while a test changes rules from its own. It knows nothing of HTTP: ``before`` returns the fault rule that
applies (a decision), and the listener turns it into an answer.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


class Clock:
    """Wall-clock time plus an offset the tests can move forward. Every service reads time from here."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()
        self._listeners: list[Any] = []

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def timestamp(self) -> int:
        return int(self.now().timestamp())

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta():
            raise ValueError(f"The clock only moves forward; got {delta}.")
        with self._lock:
            before = datetime.now(UTC) + self._offset
            self._offset += delta
            after = datetime.now(UTC) + self._offset
        for callback in list(self._listeners):
            callback(before, after)
        return after

    def on_advance(self, callback: Any) -> None:
        """Call ``callback(before, after)`` after each advance (Event Grid's expiry scanner uses it)."""
        self._listeners.append(callback)


@dataclass
class FaultRule:
    """Answer matching requests with ``status`` (or hang up when ``drop``), ``times`` times (None: always).

    With ``act_first`` the request is carried out before the fault answers: the create or the update takes effect,
    and the client sees only the error or the dropped connection (an answer lost on the way back).
    """

    method: str | None = None
    path: str | None = None  # a regular expression searched in the request path
    operation: str | None = None  # for example "keyvault.create_key"
    status: int = 503
    retry_after: float | None = None
    drop: bool = False
    times: int | None = 1
    body: Any = None
    act_first: bool = False
    hits: int = 0
    _path_re: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.method is not None:
            self.method = self.method.upper()
        if self.path is not None:
            self._path_re = re.compile(self.path)
        if not self.drop and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status code (100-599).")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1 (or null for always); got {self.times}.")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative; got {self.retry_after}.")

    def matches(self, operation: str, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.operation and self.operation != operation:
            return False
        return not (self._path_re and not self._path_re.search(path))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "status": self.status,
            "retry_after": self.retry_after,
            "drop": self.drop,
            "times": self.times,
            "act_first": self.act_first,
            "hits": self.hits,
        }


@dataclass(frozen=True)
class Call:
    at: datetime
    service: str
    operation: str
    method: str
    path: str
    status: int  # 0 when the connection was dropped
    identity: str | None


class Control:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._faults: list[FaultRule] = []
        self._latency: dict[str, float] = {}
        self._calls: list[Call] = []

    # Fault rules ---------------------------------------------------------------------------------------------
    def add_fault(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[FaultRule]:
        with self._lock:
            return list(self._faults)

    # Latency -------------------------------------------------------------------------------------------------
    def set_latency(self, operation: str, seconds: float) -> None:
        """Delay every answer to ``operation`` (or ``*`` for all) by ``seconds`` of real time."""
        if seconds < 0:
            raise ValueError(f"latency must not be negative; got {seconds}.")
        with self._lock:
            self._latency[operation] = seconds

    # Call log ------------------------------------------------------------------------------------------------
    def record(self, service: str, operation: str, method: str, path: str, identity: str | None, status: int) -> None:
        call = Call(self.clock.now(), service, operation, method, path, status, identity)
        with self._lock:
            self._calls.append(call)

    def calls(self, operation: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if operation is None or c.operation == operation]

    def counters(self) -> Counter[str]:
        """How many requests each operation answered, challenges and faults included."""
        with self._lock:
            return Counter(c.operation for c in self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # The hook every listener runs before a handler -----------------------------------------------------------
    def before(self, operation: str, method: str, path: str) -> FaultRule | None:
        """Wait out the operation's latency, then return the fault rule that applies to this request, if any."""
        with self._lock:
            delay = self._latency.get(operation, self._latency.get("*", 0.0))
            rule = next((r for r in self._faults if r.matches(operation, method, path)), None)
            if rule is not None:
                rule.hits += 1
        if delay:
            time.sleep(delay)
        return rule


class TokenBucket:
    """A token bucket in real time (throttling is felt by clients that sleep in real time, not by the test clock).

    ``capacity`` tokens, refilled at ``rate`` per second. ``take()`` returns (allowed, remaining, retry_after).
    """

    def __init__(self, capacity: float, rate: float) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError(f"a token bucket needs a positive capacity and rate; got {capacity}, {rate}.")
        self.capacity = capacity
        self.rate = rate
        self._tokens = capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, cost: float = 1.0) -> tuple[bool, int, float]:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= cost:
                self._tokens -= cost
                return True, int(self._tokens), 0.0
            return False, 0, (cost - self._tokens) / self.rate

"""ARM's request budget, as the answers report it, and the pipeline policy that paces requests by it.

ARM throttles each subscription with token buckets, one per kind of request (azure-facts §7): reads hold 250 and
refill 25 a second, writes and deletes hold 200 and refill 10 a second. Every answer says what is left in its bucket
(``x-ms-ratelimit-remaining-subscription-reads``, ``-writes``, ``-deletes``). ``Budget`` mirrors those buckets from
the headers: it spends one token per request, refills at ARM's documented rate, and takes the header's count as the
truth each time an answer brings one (less the requests still on their way, which the count may not include yet).
Once a bucket is down to its reserve, each request waits its turn at the refill rate instead of being sent to a 429.
So the pace follows the subscription's real budget, shared with every other client of the subscription, and not a
thread count; ``x-ms-ratelimit`` headers that never come (another cloud, an older ARM) leave requests unpaced, and a
429 is then retried after its ``Retry-After`` by azure-core.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

# ARM's subscription buckets (azure-facts §7): (capacity, refill per second).
BUCKETS: dict[str, tuple[float, float]] = {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}
RESERVE = 5.0  # tokens left for the subscription's other clients (the portal, a pipeline, another worker)
_HEADER = "x-ms-ratelimit-remaining-subscription-"


def bucket_of(method: str) -> str:
    """The bucket ARM charges a request with this HTTP method to."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


class Budget:
    """One subscription's buckets as far as this process knows them. Thread-safe: the clients of several event
    loops (the CLI's keys in parallel) may share it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # a bucket is unknown until an answer reports it
        self._at: dict[str, float] = {}
        self._in_flight: dict[str, int] = dict.fromkeys(BUCKETS, 0)

    def take(self, bucket: str) -> float:
        """Spend a token of ``bucket`` for a request about to be sent; the seconds it must wait first (0 while the
        bucket is above its reserve). Each waiting request is one refill interval behind the one before it."""
        capacity, rate = BUCKETS[bucket]
        with self._lock:
            self._in_flight[bucket] += 1
            if bucket not in self._tokens:
                return 0.0
            now = self._clock()
            tokens = min(capacity, self._tokens[bucket] + (now - self._at[bucket]) * rate) - 1
            self._tokens[bucket], self._at[bucket] = tokens, now
            return max(0.0, (RESERVE - tokens) / rate)

    def answered(self, bucket: str, remaining: int | None) -> None:
        """A request of ``bucket`` was answered, with ARM's count of what is left when the answer said."""
        with self._lock:
            self._in_flight[bucket] -= 1
            if remaining is not None:
                self._tokens[bucket] = float(remaining - self._in_flight[bucket])
                self._at[bucket] = self._clock()


class ArmPacing(AsyncHTTPPolicy[Any, Any]):
    """Waits, without holding a thread, for a request's turn in its subscription's ``Budget``; then reads what the
    answer says is left. A per-retry policy: each retry of a request is paced too."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self._budget = budget

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        bucket = bucket_of(request.http_request.method)
        wait = self._budget.take(bucket)
        remaining: int | None = None
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            response = await self.next.send(request)
            remaining = _remaining(response.http_response.headers.get(_HEADER + bucket))
        finally:
            self._budget.answered(bucket, remaining)
        return response


def _remaining(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit():
        return None
    return int(header.strip())

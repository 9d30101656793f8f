"""Storage blips through the one seam the storage SDKs offer for it: the azure-core transport.

``BlipTransport`` is a real ``RequestsTransport`` that, on a seeded random schedule, raises
``ServiceRequestError`` instead of sending a request (a connection that failed before the request left: the service
did nothing). The storage clients' own retry policies and the app's error handling then do what they do in Azure.
Nothing of the SDK or of the code under test is mocked or patched.
"""

from __future__ import annotations

import random
import threading
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import HttpRequest, HttpResponse, RequestsTransport


class BlipTransport(RequestsTransport):
    """Raises ``ServiceRequestError`` before a request is sent, with probability ``rate`` (0 turns blips off)."""

    def __init__(self, seed: int, *, rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = rate
        self.blips = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        with self._lock:
            blip = self.rate > 0 and self._random.random() < self.rate
            if blip:
                self.blips += 1
        if blip:
            raise ServiceRequestError(f"chaos: a storage blip before {request.method} {urlsplit(request.url).path}")
        return super().send(request, **kwargs)

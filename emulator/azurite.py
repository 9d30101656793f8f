"""Start and stop a real Azurite (the npm package pinned in ``package-lock.json``) on free ports.

Azurite is the storage the Functions app uses locally: queues, blob leases and tables. The tests and the demo start it
through ``Azurite``; it listens on ports the OS picks, so parallel runs never collide.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key: it only opens a local emulator.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (http://\S+)")


class Azurite:
    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}; run `npm ci` (or `make install`).")
        self._timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="azurite-"))
        self._process: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, str] = {}

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoints['blob']}/{ACCOUNT};"
            f"QueueEndpoint={self.endpoints['queue']}/{ACCOUNT};"
            f"TableEndpoint={self.endpoints['table']}/{ACCOUNT};"
        )

    def start(self) -> Azurite:
        command = [
            str(AZURITE_BIN),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--inMemoryPersistence",
            "--blobPort",
            "0",
            "--queuePort",
            "0",
            "--tablePort",
            "0",
        ]
        self._process = subprocess.Popen(  # noqa: S603 -- a fixed command line
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self._dir
        )
        seen: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                seen.append(line.rstrip())
                match = _LISTENING.search(line)
                if match:
                    self.endpoints[match.group(1).lower()] = match.group(2).rstrip("/")
                    if len(self.endpoints) == 3:
                        ready.set()

        threading.Thread(target=read, daemon=True, name="azurite-stdout").start()
        deadline = time.monotonic() + self._timeout
        while not ready.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Azurite did not start:\n" + "\n".join(seen[-20:]))
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # In-memory storage has nothing to flush, and a graceful stop waits for idle keep-alive connections.
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

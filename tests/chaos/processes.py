"""Worker processes for the chaos harness: one kept warm in reserve, each killed at a step boundary.

A process spawn costs about a second (Python and the Azure SDKs load), so ``ProcessPool`` starts the next process
while earlier schedules run, and a schedule that needs one usually finds it warm. ``WorkerProcess`` reads the child's
JSON lines on a thread and keeps the tail of its stderr for error messages. Every process is the harness's own child
and is ended by its handle (``kill``), never by name.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WARM_TIMEOUT = 60.0


class WorkerProcess:
    """``tests/chaos/worker_process.py`` in its own OS process."""

    def __init__(self) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.worker_process"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True, name="chaos-process-stdout").start()
        threading.Thread(target=self._drain, daemon=True, name="chaos-process-stderr").start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self._stderr.append(f"stdout: {line.rstrip()}")

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip())

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def wait_for(self, events: set[str], timeout: float) -> dict[str, Any] | None:
        """The first line naming one of ``events`` within ``timeout`` seconds; None when none came (or it died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.01)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    return None
                continue
            self.seen.append(line)
            if line.get("event") in events:
                return line
        return None

    def start(self, job: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()

    def drain_lines(self) -> None:
        """Move whatever the reader has queued into ``seen``."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def kill(self) -> bool:
        """SIGKILL the process if it still runs; True when it had to be killed."""
        alive = self.process.poll() is None
        if alive:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return alive


class ProcessPool:
    """One spare worker process, started ahead of need."""

    def __init__(self) -> None:
        self._spare: WorkerProcess | None = None
        self.spawned = 0

    def prewarm(self) -> None:
        if self._spare is None or self._spare.process.poll() is not None:
            self._spare = WorkerProcess()
            self.spawned += 1

    def take(self) -> WorkerProcess:
        """A warm process (spawned now if there is none), which the caller owns from now on."""
        self.prewarm()
        worker, self._spare = self._spare, None
        assert worker is not None
        if worker.wait_for({"warm"}, WARM_TIMEOUT) is None:
            worker.kill()
            raise RuntimeError(f"a chaos worker process did not start:\n{worker.stderr_tail}")
        return worker

    def close(self) -> None:
        if self._spare is not None:
            self._spare.kill()
            self._spare = None

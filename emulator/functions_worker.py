"""The real Azure Functions Python worker, driven in-process the way the Functions host drives it over gRPC.

::

    FunctionsHost ──► FunctionsWorker ──(StreamingMessage protobufs)──► azure_functions_runtime (the worker library)
                      one event loop on a thread                         worker_init_request   index function_app.py
                      + the worker's own threadpool                      functions_metadata_request
                                                                         function_load_request (each function)
                                                                         invocation_request    wire TypedData in/out

The worker library is ``azure-functions-runtime``, the code the Python proxy worker loads for an app of the v2
programming model: it imports ``function_app.py``, calls the app's ``get_functions()`` once, checks every function's
bindings against its Python signature, decodes each invocation's ``TypedData`` with the ``azure.functions`` converters,
runs the function on its threadpool and encodes the result. So a function that the real worker would refuse to load,
or whose invocation the real worker would fail, fails here the same way.

It keeps its state in module globals (one function app per process), so ``FunctionsWorker.start()`` is a per-process
singleton: the first call initialises, indexes and loads; later calls return the same worker, or raise the same
``WorkerError`` when that failed. Its protobuf messages are the generated FunctionRpc modules, which ship only in the
``azure-functions-runtime-v1`` wheel as a top-level ``tests`` package; the Makefile installs that wheel into
``.venv/functions-worker`` (never site-packages, where it would shadow our own ``tests``), and they are loaded here
under a package name of our own.

What this module must never do: call a user function itself, convert an input with the ``azure.functions`` library,
or call ``get_functions()``: the worker does all three, once, as in Azure.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
import types
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER_DIR = Path(sys.prefix) / "functions-worker"
"""Where the Makefile installs ``azure-functions-runtime-v1`` (``--target``): its ``tests/protos`` are the FunctionRpc
protobuf modules. ``AZURE_FUNCTIONS_WORKER_DIR`` overrides it."""
PROTOS_PACKAGE = "emulator.function_rpc"
HOST_VERSION = "4.1040.100.0"  # WorkerInitRequest.host_version; the worker does not read it
INSTALL_HINT = (
    "run `make install` (the Makefile installs azure-functions-runtime==1.3.0 and, into .venv/functions-worker, "
    "azure-functions-runtime-v1==1.2.0 for its FunctionRpc protobuf modules)"
)


class WorkerError(RuntimeError):
    """The worker could not be started, could not index the app, or refused to load a function. The message carries
    the worker's own exception message (``StatusResult.exception``), as the host logs it."""


class InvocationFailed(Exception):
    """An invocation the worker answered with ``StatusResult.Failure``: the function raised, or the worker could not
    decode its input or encode its result. ``exception_type`` and ``message`` are the worker's ``RpcException``
    (``"<Type>: <message>"``, split), ``stack_trace`` its formatted traceback, chained causes included."""

    def __init__(self, function: str, exception_type: str, message: str, stack_trace: str = "") -> None:
        super().__init__(f"{function} failed: {exception_type}: {message}")
        self.function = function
        self.exception_type = exception_type
        self.message = message
        self.stack_trace = stack_trace
        self.failures: list[InvocationFailed] = [self]
        """Every failure of the delivery this one belongs to (an Event Grid batch fails as a whole)."""


@dataclass(frozen=True)
class WorkerFunction:
    """One function as the worker's metadata response describes it to the host."""

    name: str
    function_id: str
    raw_bindings: tuple[str, ...]
    """The bindings as the host receives them: JSON text, enums by name (``"direction": "IN"``)."""
    metadata: Any  # the RpcFunctionMetadata message

    @property
    def bindings(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = [json.loads(raw) for raw in self.raw_bindings]
        return parsed

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger binding (``type`` ends in ``Trigger``, in any case, as the host matches it)."""
        return next(b for b in self.bindings if str(b.get("type", "")).lower().endswith("trigger"))


class _Request:
    """What the proxy worker hands each handler: the StreamingMessage and the host and protos it was started with."""

    def __init__(self, name: str, message: Any, protos: Any) -> None:
        self.name = name
        self.request = message
        self.properties = {"host": "127.0.0.1", "protos": protos}


def load_protos(worker_dir: Path | None = None) -> types.ModuleType:
    """The FunctionRpc protobuf modules as one package (the names ``tests/protos/__init__.py`` exports, without its
    gRPC service stubs, which would need ``grpcio``)."""
    if PROTOS_PACKAGE in sys.modules:
        return sys.modules[PROTOS_PACKAGE]
    directory = (worker_dir or Path(os.environ.get("AZURE_FUNCTIONS_WORKER_DIR", WORKER_DIR))) / "tests" / "protos"
    if not (directory / "FunctionRpc_pb2.py").is_file():
        raise WorkerError(f"the FunctionRpc protobuf modules are not in {directory}; {INSTALL_HINT}")
    package = types.ModuleType(PROTOS_PACKAGE, "FunctionRpc messages (from azure-functions-runtime-v1's tests/protos)")
    package.__path__ = [str(directory)]
    package.__package__ = PROTOS_PACKAGE
    sys.modules[PROTOS_PACKAGE] = package
    try:
        for module in ("FunctionRpc_pb2", "shared.NullableTypes_pb2"):
            loaded = importlib.import_module(f"{PROTOS_PACKAGE}.{module}")
            for name in dir(loaded):
                if not name.startswith("_"):
                    setattr(package, name, getattr(loaded, name))
    except Exception as exc:
        del sys.modules[PROTOS_PACKAGE]
        raise WorkerError(f"the FunctionRpc modules in {directory} do not load: {exc}; {INSTALL_HINT}") from exc
    return package


class FunctionsWorker:
    """The process's worker: ``start()`` it, read ``functions``, and ``invoke`` them with wire ``TypedData``."""

    _instance: FunctionsWorker | None = None
    _failure: WorkerError | None = None
    _lock = threading.Lock()

    def __init__(self, app_directory: Path) -> None:
        try:
            import azure_functions_runtime as runtime
        except ImportError as exc:
            raise WorkerError(f"the worker library is not installed ({exc}); {INSTALL_HINT}") from exc
        self.app_directory = app_directory
        self.protos = load_protos()
        self._runtime = runtime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="functions-worker", daemon=True)
        self._thread.start()
        self.capabilities: dict[str, str] = {}
        self.functions: dict[str, WorkerFunction] = {}
        self.app: Any = None

    # -- the singleton ---------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, app_directory: Path = ROOT) -> FunctionsWorker:
        """The process's worker for the app in ``app_directory`` (its ``function_app.py``), initialised and loaded on
        the first call. A failed start is remembered: every later call raises the same ``WorkerError``."""
        app_directory = app_directory.resolve()
        with cls._lock:
            if cls._failure is not None:
                raise cls._failure
            if cls._instance is None:
                try:
                    worker = cls(app_directory)
                    worker._initialise()
                except WorkerError as exc:
                    cls._failure = exc
                    raise
                cls._instance = worker
            if cls._instance.app_directory != app_directory:
                raise WorkerError(
                    f"this process's worker already runs the app in {cls._instance.app_directory}; the worker keeps "
                    f"one function app per process, so {app_directory} needs a process of its own"
                )
            return cls._instance

    def _initialise(self) -> None:
        """Worker init (which indexes the app), the metadata request, and one load request per function, as the host
        sends them when it starts a worker for an app whose functions the worker indexes."""
        protos = self.protos
        directory = str(self.app_directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)  # the proxy worker puts the app's folder on sys.path before indexing
        self._runtime.start_threadpool_executor()
        init = self._call(
            "worker_init_request",
            protos.StreamingMessage(
                request_id=str(uuid.uuid4()),
                worker_init_request=protos.WorkerInitRequest(
                    host_version=HOST_VERSION,
                    worker_directory=directory,
                    function_app_directory=directory,
                ),
            ),
        )
        self._check(init.result, f"the worker could not index {self.app_directory / 'function_app.py'}")
        self.capabilities = dict(init.capabilities)
        metadata = self._call(
            "functions_metadata_request",
            protos.StreamingMessage(
                request_id=str(uuid.uuid4()),
                functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=directory),
            ),
        )
        self._check(metadata.result, "the worker could not list the app's functions")
        for entry in metadata.function_metadata_results:
            self.functions[entry.name] = WorkerFunction(entry.name, entry.function_id, tuple(entry.raw_bindings), entry)
        for function in self.functions.values():
            loaded = self._call(
                "function_load_request",
                protos.StreamingMessage(
                    request_id=str(uuid.uuid4()),
                    function_load_request=protos.FunctionLoadRequest(
                        function_id=function.function_id, metadata=function.metadata
                    ),
                ),
            )
            self._check(loaded.result, f"the worker could not load {function.name}")
        self.app = self._indexed_app()

    def _indexed_app(self) -> Any:
        """The FunctionApp object the worker indexed: the one top-level ``FunctionRegister`` of the script module."""
        from azure.functions import FunctionRegister

        script = os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py")
        module = sys.modules.get(Path(script).stem)
        found = [v for v in vars(module).values() if isinstance(v, FunctionRegister)] if module else []
        return found[0] if len(found) == 1 else None

    # -- invocations -----------------------------------------------------------------------------------------------
    def function(self, name: str) -> WorkerFunction:
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"the worker has no function {name!r}; it indexed {sorted(self.functions)}") from None

    def invoke(
        self,
        name: str,
        inputs: Mapping[str, Any],
        trigger_metadata: Mapping[str, Any] | None = None,
        *,
        trace_parent: str | None = None,
    ) -> Any:
        """One ``InvocationRequest``: ``inputs`` are ``ParameterBinding``s by name (``TypedData``), and
        ``trigger_metadata`` the trigger's binding data (``TypedData`` by name). Returns the response's
        ``return_value`` (a ``TypedData``, or None when the function has no ``$return`` binding); raises
        ``InvocationFailed`` when the worker answers ``StatusResult.Failure``."""
        protos = self.protos
        function = self.function(name)
        request = protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=function.function_id,
            input_data=[protos.ParameterBinding(name=key, data=value) for key, value in inputs.items()],
            trigger_metadata=dict(trigger_metadata or {}),
            trace_context=protos.RpcTraceContext(
                trace_parent=trace_parent or f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"
            ),
            retry_context=protos.RetryContext(retry_count=0, max_retry_count=0),
        )
        response = self._call(
            "invocation_request", protos.StreamingMessage(request_id=str(uuid.uuid4()), invocation_request=request)
        )
        if response.result.status != protos.StatusResult.Success:
            kind, _, message = response.result.exception.message.partition(": ")
            raise InvocationFailed(name, kind, message, response.result.exception.stack_trace)
        return response.return_value if response.HasField("return_value") else None

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _call(self, handler: str, message: Any) -> Any:
        """Run one of the worker's async handlers on the worker's event loop and wait for its answer."""
        coroutine = getattr(self._runtime, handler)(_Request(handler, message, self.protos))
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def _check(self, result: Any, what: str) -> None:
        if result.status != self.protos.StatusResult.Success:
            raise WorkerError(f"{what}: {result.exception.message}")

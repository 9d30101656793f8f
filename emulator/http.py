"""The HTTPS plumbing every emulated service shares.

A ``Listener`` is one TLS socket on 127.0.0.1 with its own thread pool. It turns each HTTP exchange into a
``Request``, runs the control plane's hooks (call log, latency, fault rules), routes the request to a service's
handler and writes the ``Response``. It never lets an exception escape: a malformed request gets a 400 in the
service's own error format, and a bug in a handler gets a 500 that names the exception, so a test sees it.

    client ──TLS──► Listener ──► Router ──► Control.before() ──► handler(req, **groups) ──► Response
                                             (latency, the fault rule that applies)              │
                         ◄──────────── the fault's answer, or the handler's; both in the call log ◄┘

A fault rule answers instead of the handler, or (``act_first``) after it: the change is made and the answer lost.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.control import Control, FaultRule
from emulator.credential import audience_from_authorization, identity_from_authorization

MAX_BODY = 4 * 1024 * 1024


class HttpError(Exception):
    """Raised by a handler to answer with an error. ``body`` is already in the service's error format."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    listener: Listener

    @property
    def identity(self) -> str | None:
        """The caller's identity (the token's ``oid``), or None when no bearer token was sent."""
        return identity_from_authorization(self.headers.get("Authorization"))

    @property
    def audience(self) -> str | None:
        """The token's ``aud`` without a trailing slash (``https://vault.azure.net``), or None without a token."""
        return audience_from_authorization(self.headers.get("Authorization"))

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise self.listener.service.bad_request(f"The request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    handler: Handler


class Service:
    """A set of routes plus the service's error format. Subclasses register routes with ``route``."""

    name = "service"

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, pattern: str, operation: str, handler: Handler) -> None:
        self.routes.append(Route(method, re.compile(pattern + r"\Z"), operation, handler))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        allowed = False
        for route in self.routes:
            m = route.pattern.match(path)
            if m:
                if route.method == method:
                    return route, m.groupdict()
                allowed = True
        if allowed:
            raise self.error(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")
        return None

    def error(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> HttpError:
        return HttpError(status, {"error": {"code": code, "message": message}}, headers)

    def bad_request(self, message: str) -> HttpError:
        return self.error(400, "BadParameter", message)

    def not_found(self, path: str) -> HttpError:
        return self.error(404, "NotFound", f"No such resource: {path}")

    def authenticate(self, request: Request) -> Response | None:
        """Return a response to answer instead of acting (a 401 challenge), or None to go on."""
        return None


class Listener:
    """One HTTPS endpoint on 127.0.0.1 serving one ``Service``."""

    def __init__(self, service: Service, control: Control, ssl_context: ssl.SSLContext, port: int = 0) -> None:
        self.service = service
        self.control = control
        listener = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "azure-emulator"
            # Headers and body go out in separate writes; with Nagle's algorithm and delayed ACKs each answer
            # would wait ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # the call log records requests
                pass

            def _serve(self) -> None:
                listener._handle(self)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up mid-exchange is not the emulator's problem

        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.socket = ssl_context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port: int = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"{service.name}:{self.port}"
        )
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length_header = h.headers.get("Content-Length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._write(h, self._as_response(self.service.bad_request(f"Bad Content-Length {length_header!r}.")))
            return
        body = h.rfile.read(length) if length else b""
        request = Request(h.command, split.path, query, h.headers, body, self)
        response = self._dispatch(request)
        if response is None:  # a fault rule asked to drop the connection
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(h, response)

    def _dispatch(self, request: Request) -> Response | None:
        """The answer to ``request``, or None to hang up without one (a fault rule that drops the connection)."""
        operation = "unknown"
        answer: Response | None
        try:
            matched = self.service.match(request.method, request.path)
            if matched is None:
                raise self.service.not_found(request.path)
            route, groups = matched
            operation = route.operation
            answer = self.service.authenticate(request)
            if answer is None:
                fault = self.control.before(operation, request.method, request.path)
                if fault is not None and fault.act_first:
                    self._handle_route(route, groups, request)
                answer = self._handle_route(route, groups, request) if fault is None else self._fault_answer(fault)
        except Exception as exc:  # noqa: BLE001 -- routing and authentication answer like a handler
            answer = self._error_answer(exc)
        status = 0 if answer is None else answer.status
        self.control.record(self.service.name, operation, request.method, request.path, request.identity, status)
        return answer

    def _handle_route(self, route: Route, groups: dict[str, str], request: Request) -> Response:
        try:
            return route.handler(request, **groups)
        except Exception as exc:  # noqa: BLE001 -- a handler bug: answer, never crash the listener
            return self._error_answer(exc)

    def _error_answer(self, exc: Exception) -> Response:
        if isinstance(exc, HttpError):
            return self._as_response(exc)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return self._as_response(self.service.error(500, "InternalError", f"Emulator bug: {detail}"))

    def _fault_answer(self, fault: FaultRule) -> Response | None:
        if fault.drop:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        body = fault.body
        if body is None:
            body = self.service.error(fault.status, "InjectedFault", f"Fault rule answered {fault.status}.").body
        return Response(fault.status, body, headers)

    @staticmethod
    def _as_response(exc: HttpError) -> Response:
        return Response(exc.status, exc.body, exc.headers)

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, response: Response) -> None:
        payload = response.encoded()
        try:
            h.send_response(response.status)
            if payload:
                h.send_header("Content-Type", response.content_type)
            h.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                h.send_header(name, value)
            h.end_headers()
            if payload and h.command != "HEAD":
                h.wfile.write(payload)
        except OSError:
            h.close_connection = True

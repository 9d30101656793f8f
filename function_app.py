"""Azure Functions entry points (Python v2 programming model). Triggers only: parse the input, call one method of
``rotation.app.RotationApp``, map its result to the trigger's answer. No SDK client is built here.

    on_key_event        Event Grid  Key Vault key events, both schemas     → record + enqueue
    on_queued_key_event queue       key-events (Event Grid's storage-queue delivery, for apps without a public endpoint)
    rotation_sweep      timer       %ROTATION_SCHEDULE%                     → drift, retirement, enqueue due keys
    submit_rotation     HTTP POST   /api/rotations                          → 202 + status URL (200 plan on dry run)
    get_rotation        HTTP GET    /api/rotations/{request_id}             → the ledger row
    fleet_status        HTTP GET    /api/status                             → versions, accounts, drift of each target
    rotation_worker     queue       rotation-requests                       → lock, reconcile, ledger, outcome event
    rotation_poison     queue       rotation-requests-poison                → ledger row failed, failure event

Triggers never raise by accident. The one exception that leaves a function is ``Redeliver``, raised on purpose so the
host delivers the message or event again (a storage fault, a lost lease, a recorded retryable failure, a bad setting
that must not lose the message). Anything else is a bug: it is logged with the event's or message's id and the input
is acknowledged. HTTP answers are JSON in the project's error format: a 4xx names the bad value, 503 the bad setting.
The HTTP functions take a Functions key, or, with ``ROTATION_HTTP_AUTH=entra``, an Entra ID app role (rotation/auth.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import azure.functions as func

from rotation.app import Answer, Redeliver, RotationApp, current_app, error_answer
from rotation.auth import ROLE_READ, ROLE_SUBMIT, HttpAuth, authorize, functions_auth_level
from rotation.errors import ConfigError
from rotation.log import Event, emit, install_redaction
from rotation.redact import described
from rotation.storage import KEY_EVENTS_QUEUE, POISON_QUEUE, REQUESTS_QUEUE

# ROTATION_HTTP_AUTH=entra (behind App Service authentication): anonymous at the Functions level, the app checks the
# caller's app role. Anything else, a bad value included, keeps the Functions keys (the stricter); Settings reports it.
_ANONYMOUS = functions_auth_level(os.environ) == "anonymous"
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS if _ANONYMOUS else func.AuthLevel.FUNCTION)
# azure-core logs every HTTP request and response at INFO (headers redacted): noise next to the rotation.* events.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
install_redaction()


@contextmanager
def _edge(function: str, input_id: object, *, redeliver_on_config_error: bool) -> Iterator[None]:
    """Let only ``Redeliver`` out of a trigger; log and acknowledge anything else. A bad setting is redelivered where
    the input would otherwise be lost (a queued request), and acknowledged where the sender retries (Event Grid)."""
    try:
        yield
    except Redeliver:
        raise
    except ConfigError as exc:
        emit(
            Event.CONFIG_ERROR,
            f"{function} cannot run (input {described(input_id)}): {exc}",
            reason=exc.reason,
            level=logging.ERROR,
            function=function,
            input_id=described(input_id),
        )
        if redeliver_on_config_error:
            raise Redeliver(f"{function} cannot run until the settings are fixed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the edge: a bug is reported with its input's id and traceback
        emit(
            Event.INTERNAL_ERROR,
            f"{function} failed on input {described(input_id)} with {type(exc).__name__}",
            level=logging.ERROR,
            exc_info=True,
            function=function,
            input_id=described(input_id),
        )


def _respond(req: func.HttpRequest, role: str, call: Callable[[RotationApp], Answer]) -> func.HttpResponse:
    """The JSON answer of ``call``: 503 naming the bad setting when the app cannot be configured, and a JSON 500
    without details (logged with its traceback) for a bug. With ``ROTATION_HTTP_AUTH=entra`` the caller needs the
    app ``role`` first (401 without a principal, 403 without the role); nothing is read or written before."""
    try:
        rotation = current_app()
        refusal = authorize(req.headers, role) if rotation.settings.http_auth is HttpAuth.ENTRA else None
        if refusal is None:
            answer = call(rotation)
        else:
            challenge = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else {}
            answer = error_answer(refusal.status, refusal.code, refusal.message, challenge)
    except ConfigError as exc:
        answer = error_answer(503, "ConfigError", f"the service is misconfigured: {exc}", {"Retry-After": "300"})
    except Exception as exc:  # noqa: BLE001 - never a traceback in an answer (it is in the log)
        emit(
            Event.INTERNAL_ERROR,
            f"an HTTP request failed with {type(exc).__name__}",
            level=logging.ERROR,
            exc_info=True,
        )
        answer = error_answer(500, "InternalError", "the service failed unexpectedly; the error is in its log")
    return func.HttpResponse(
        json.dumps(answer.body), status_code=answer.status, headers=dict(answer.headers), mimetype="application/json"
    )


@app.event_grid_trigger(arg_name="event")
def on_key_event(event: func.EventGridEvent) -> None:
    with _edge("on_key_event", event.id, redeliver_on_config_error=True):
        # The library hands a CloudEvent for the CloudEvents schema and an EventGridEvent otherwise.
        event_type = event.type if isinstance(event, func.CloudEvent) else event.event_type
        data = event.get_json()  # both classes keep the payload's "data" there; CloudEvent has no .data attribute
        current_app().on_key_event(event_id=event.id, event_type=event_type, subject=event.subject, data=data)


@app.queue_trigger(arg_name="message", queue_name=KEY_EVENTS_QUEUE, connection="AzureWebJobsStorage")
def on_queued_key_event(message: func.QueueMessage) -> None:
    # Event Grid's storage-queue destination writes one event per message, in the subscription's schema.
    with _edge("on_queued_key_event", message.id, redeliver_on_config_error=True):
        try:
            event = json.loads(message.get_body())
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            emit(
                Event.EVENT_IGNORED,
                f"key-events message {message.id} is not JSON",
                level=logging.WARNING,
                why="not JSON",
            )
            return
        if not isinstance(event, dict):
            emit(
                Event.EVENT_IGNORED,
                f"key-events message {message.id} is not one event object",
                level=logging.WARNING,
                why="not one event object",
            )
            return
        cloud = "specversion" in event
        current_app().on_key_event(
            event_id=event.get("id"),
            event_type=event.get("type" if cloud else "eventType"),
            subject=event.get("subject"),
            data=event.get("data"),
        )


@app.timer_trigger(schedule="%ROTATION_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def rotation_sweep(timer: func.TimerRequest) -> None:
    with _edge("rotation_sweep", "timer", redeliver_on_config_error=False):
        result = current_app().sweep()
        failed = f" ({', '.join(result.failed)})" if result.failed else ""
        emit(
            Event.SWEEP_COMPLETED,
            f"{len(result.enqueued)} enqueued, {len(result.repaired)} stuck requests sent again, "
            f"{len(result.failed)} targets failed{failed}",
            level=logging.ERROR if result.failed else logging.INFO,
            enqueued=len(result.enqueued),
            repaired=len(result.repaired),
            failed=len(result.failed),
            past_due=timer.past_due,
        )


@app.route(route="rotations", methods=["POST"])
def submit_rotation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(
        req, ROLE_SUBMIT, lambda rotation: rotation.submit(req.get_body(), req.headers.get("Idempotency-Key"))
    )


@app.route(route="rotations/{request_id}", methods=["GET"])
def get_rotation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(req, ROLE_READ, lambda rotation: rotation.request(req.route_params.get("request_id", "")))


@app.route(route="status", methods=["GET"])
def fleet_status(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(req, ROLE_READ, lambda rotation: rotation.fleet_status())


@app.queue_trigger(arg_name="message", queue_name=REQUESTS_QUEUE, connection="AzureWebJobsStorage")
def rotation_worker(message: func.QueueMessage) -> None:
    with _edge("rotation_worker", message.id, redeliver_on_config_error=True):
        current_app().work(message.get_body())


@app.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def rotation_poison(message: func.QueueMessage) -> None:
    reason = "every delivery of the request failed (host.json: extensions.queues.maxDequeueCount)"
    with _edge("rotation_poison", message.id, redeliver_on_config_error=True):
        current_app().give_up(message.get_body(), reason=reason)

"""Azure Functions entry points (Python v2 programming model). Triggers only: parse the input, call one method of
``rotation.app.RotationApp``, map its result to the trigger's answer. No SDK client is built here.

    on_key_event        Event Grid  Key Vault key events, both schemas     → record + enqueue
    on_queued_key_event queue       key-events (Event Grid's storage-queue delivery, for apps without a public endpoint)
    rotation_sweep      timer       %ROTATION_SCHEDULE%                     → enqueue due or drifting keys
    submit_rotation     HTTP POST   /api/rotations                          → 202 + status URL (200 plan on dry run)
    get_rotation        HTTP GET    /api/rotations/{request_id}             → the ledger row
    fleet_status        HTTP GET    /api/status                             → versions and accounts of every target
    rotation_worker     queue       rotation-requests                       → lock, reconcile, ledger, outcome event
    rotation_poison     queue       rotation-requests-poison                → ledger row failed, failure event
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import azure.functions as func

from rotation.app import Answer, RotationApp, current_app
from rotation.errors import ConfigError

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("rotation")
# azure-core logs every HTTP request and response at INFO (headers redacted): noise next to the rotation.* events.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def _respond(call: Callable[[RotationApp], Answer]) -> func.HttpResponse:
    """The JSON answer of ``call``; a 503 naming the bad setting when the app cannot be configured."""
    try:
        rotation = current_app()
    except ConfigError as exc:
        body = {"error": {"code": "ConfigError", "message": f"the service is misconfigured: {exc}"}}
        return func.HttpResponse(json.dumps(body), status_code=503, mimetype="application/json")
    answer = call(rotation)
    return func.HttpResponse(
        json.dumps(answer.body), status_code=answer.status, headers=dict(answer.headers), mimetype="application/json"
    )


@app.event_grid_trigger(arg_name="event")
def on_key_event(event: func.EventGridEvent) -> None:
    # The library hands a CloudEvent for the CloudEvents schema and an EventGridEvent otherwise.
    event_type = event.type if isinstance(event, func.CloudEvent) else event.event_type
    data = event.get_json()  # both classes keep the payload's "data" there; CloudEvent has no .data attribute
    current_app().on_key_event(event_id=event.id, event_type=event_type, subject=event.subject, data=data)


@app.queue_trigger(arg_name="message", queue_name="key-events", connection="AzureWebJobsStorage")
def on_queued_key_event(message: func.QueueMessage) -> None:
    # Event Grid's storage-queue destination writes one event per message, in the subscription's schema.
    try:
        event = json.loads(message.get_body())
    except ValueError:
        log.warning("rotation.event_ignored", extra={"why": "a key-events message is not JSON"})
        return
    if not isinstance(event, dict):
        log.warning("rotation.event_ignored", extra={"why": "a key-events message is not one event object"})
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
    requests = current_app().sweep()
    log.info("rotation.sweep_completed", extra={"enqueued": len(requests), "past_due": timer.past_due})


@app.route(route="rotations", methods=["POST"])
def submit_rotation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(lambda rotation: rotation.submit(req.get_body(), req.headers.get("Idempotency-Key")))


@app.route(route="rotations/{request_id}", methods=["GET"])
def get_rotation(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(lambda rotation: rotation.request(req.route_params.get("request_id", "")))


@app.route(route="status", methods=["GET"])
def fleet_status(req: func.HttpRequest) -> func.HttpResponse:
    return _respond(lambda rotation: rotation.fleet_status())


@app.queue_trigger(arg_name="message", queue_name="rotation-requests", connection="AzureWebJobsStorage")
def rotation_worker(message: func.QueueMessage) -> None:
    current_app().work(message.get_body())


@app.queue_trigger(arg_name="message", queue_name="rotation-requests-poison", connection="AzureWebJobsStorage")
def rotation_poison(message: func.QueueMessage) -> None:
    reason = "every delivery of the request failed (host.json: extensions.queues.maxDequeueCount)"
    current_app().give_up(message.get_body(), reason=reason)

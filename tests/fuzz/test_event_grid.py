"""Family 1: Event Grid webhook deliveries to ``on_key_event``, in both schemas (EventGridSchema and
CloudEventSchemaV1_0).

Each case is one wire array (mostly of one event, sometimes of two or three) delivered through
``FunctionsHost.deliver_events`` (the Event Grid webhook), which has the real Python worker invoke the function once per
event; the worker decodes each event with the ``azure.functions`` library's converter. Events that converter refuses (an
``eventTime`` it cannot parse) fail in the worker before the function runs, in Azure too: they are left out of the array
and counted as ``not_delivered``.

Accepted: a key event for a target key with a usable id and version (recorded and enqueued). Rejected: everything
else, with one ``rotation.event_ignored`` line per event and no write.
"""

from __future__ import annotations

import json
from typing import Any

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.events import any_schema_event
from tests.fuzz.harness import World, judge_trigger, tally
from tests.fuzz.profiles import budget


def converts(event: dict[str, Any]) -> bool:
    """True when the Functions host can hand ``event`` to a function (the library converter accepts it)."""
    try:
        EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
    except Exception:  # noqa: BLE001 -- whatever the library raises, the host fails before the function runs
        return False
    return True


def test_event_grid_deliveries(world: World) -> None:
    family = tally("event_grid")
    sizes = st.sampled_from([1] * 8 + [2, 3])
    arrays = sizes.flatmap(lambda n: st.lists(any_schema_event(world), min_size=n, max_size=n))

    with world.serving("event_grid") as served:

        @settings(max_examples=budget("event_grid"))
        @given(events=arrays)
        def deliver(events: list[dict[str, Any]]) -> None:
            delivered = [event for event in events if converts(event)]
            family.not_delivered += len(events) - len(delivered)
            if not delivered:
                return
            error: BaseException | None = None
            with world.observe(served.transport) as seen:
                try:
                    served.host.deliver_events("on_key_event", json.dumps(delivered))
                except Exception as exc:  # noqa: BLE001 -- counted: only Redeliver may leave, and none should
                    error = exc
            judge_trigger(family, world.secrets, delivered, seen, error, inputs=len(delivered))

        deliver()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()

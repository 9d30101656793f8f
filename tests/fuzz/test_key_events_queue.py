"""Family 2: key-events queue messages (Event Grid's storage-queue delivery) to ``on_queued_key_event``.

Each case is one message's text, as the host hands it over after base64-decoding, delivered through
``FunctionsHost.deliver_message``: one event in either schema (valid or mutated, written with or without ASCII
escapes), the same text edited (cut, spliced, padded, nested, a BOM), an array of events (Event Grid writes one per
message), or junk (text, binary, '[' * N).

Accepted: a key event for a target key (recorded and enqueued). Rejected: everything else, with one
``rotation.event_ignored`` line and no write.
"""

from __future__ import annotations

import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.events import any_schema_event
from tests.fuzz.harness import World, judge_trigger, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import json_values, junk_text, text_mutation, weighted


def messages(world: World) -> st.SearchStrategy[str]:
    one_event = st.builds(
        lambda event, ascii_only: json.dumps(event, ensure_ascii=ascii_only), any_schema_event(world), st.booleans()
    )
    return weighted(
        (6, one_event),
        (2, one_event.flatmap(text_mutation)),
        (1, st.lists(any_schema_event(world), min_size=1, max_size=2).map(json.dumps)),
        (1, json_values.map(json.dumps)),
        (1, junk_text),
    )


def test_key_events_queue_messages(world: World) -> None:
    family = tally("key_events")
    with world.serving("key_events") as served:

        @settings(max_examples=budget("key_events"))
        @given(text=messages(world))
        def deliver(text: str) -> None:
            error: BaseException | None = None
            with world.observe(served.transport) as seen:
                try:
                    served.host.deliver_message("on_queued_key_event", text, message_id=str(uuid.uuid4()))
                except Exception as exc:  # noqa: BLE001 -- counted: only Redeliver may leave, and none should
                    error = exc
            judge_trigger(family, world.secrets, text, seen, error)

        deliver()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()

"""A function app the real worker refuses to index: an Event Grid trigger annotated as a queue message."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp()


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.QueueMessage) -> None:
    pass

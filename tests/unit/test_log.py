"""The one event vocabulary (rotation/log.py): every ``rotation.*`` record goes through ``emit`` with an ``Event``, its
text stands on its own (event, key, account, reason, request, then the prose), and its ``extra`` carries the fields.

The Functions worker forwards only a record's formatted text, so these tests read ``getMessage()`` as it would; the
last ones scan the source so that no module but rotation/log.py names a ``rotation.*`` event in a string.
"""

from __future__ import annotations

import ast
import logging
import pkgutil
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import rotation
from rotation.log import (
    LOGGER_NAME,
    REDACTED_LOGGERS,
    Event,
    FieldValue,
    RedactingFilter,
    emit,
    install_redaction,
    render,
)
from rotation.reasons import Reason
from rotation.redact import redacted
from rotation.telemetry import MetricName, SpanName
from tests.unit.factories import AOAI_1, KEY

ROOT = Path(__file__).resolve().parents[2]
REQUEST_ID = "0b6c8a4e-5a1f-4d5e-9a43-1f3c2b7d9e10"


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    return caplog


def only(records: pytest.LogCaptureFixture) -> logging.LogRecord:
    [record] = [r for r in records.records if r.name == LOGGER_NAME]
    return record


@pytest.mark.parametrize("event", list(Event), ids=[e.value for e in Event])
def test_every_event_names_itself_its_key_account_reason_and_request_in_its_text(
    event: Event, records: pytest.LogCaptureFixture
) -> None:
    emit(
        event,
        "what happened, in prose: it may hold ': ' and 50% too",
        key=KEY,
        request_id=REQUEST_ID,
        version="v2",
        account=AOAI_1,
        reason=Reason.PERMISSION_DENIED,
        level=logging.WARNING,
        step="create",
        accounts=3,
        dry_run=False,
    )

    record = only(records)
    assert record.getMessage() == (
        f"{event.value}: key_url={KEY.id} account={AOAI_1.id} reason=PermissionDenied request={REQUEST_ID}: "
        "what happened, in prose: it may hold ': ' and 50% too"
    )
    assert str(record.msg).split(":")[0] == event.value  # what tests/functional's events_named reads
    assert redacted(record.getMessage()) == record.getMessage()  # the root's RedactingFilter leaves the fields be
    assert record.levelno == logging.WARNING
    fields = vars(record)
    assert {name: fields[name] for name in ("event", "key", "request_id", "version", "account", "reason")} == {
        "event": event.value,
        "key": KEY.id,
        "request_id": REQUEST_ID,
        "version": "v2",
        "account": AOAI_1.id,
        "reason": "PermissionDenied",
    }
    assert (fields["step"], fields["accounts"], fields["dry_run"]) == ("create", 3, False)


@pytest.mark.parametrize("event", list(Event), ids=[e.value for e in Event])
def test_an_event_without_key_account_reason_or_request_is_its_name_and_its_prose(
    event: Event, records: pytest.LogCaptureFixture
) -> None:
    emit(event, "2 enqueued, 0 stuck requests sent again, 0 targets failed", enqueued=2, past_due=None)

    record = only(records)
    assert record.getMessage() == f"{event.value}: 2 enqueued, 0 stuck requests sent again, 0 targets failed"
    assert record.event == event.value and record.enqueued == 2  # type: ignore[attr-defined]
    for absent in ("key", "request_id", "version", "account", "reason", "past_due"):  # None values are left out
        assert not hasattr(record, absent)


@pytest.mark.parametrize(
    ("fields", "head"),
    [
        ({"key": KEY.id}, f"key_url={KEY.id}"),
        ({"account": AOAI_1.id}, f"account={AOAI_1.id}"),
        ({"reason": "KeyDisabled", "key": KEY.id}, f"key_url={KEY.id} reason=KeyDisabled"),
        ({"request_id": "r-1", "reason": "ConfigError"}, "reason=ConfigError request=r-1"),
        ({"reason": "", "request_id": "two words"}, 'reason="" request="two words"'),  # still one token each
        ({"version": "v1", "why": "not JSON", "key": KEY.id}, f"key_url={KEY.id}"),  # the rest stays in the fields
    ],
)
def test_the_text_carries_the_fields_it_has_in_one_order(fields: Mapping[str, FieldValue], head: str) -> None:
    assert render(Event.FAILED, "prose", fields) == f"rotation.failed: {head}: prose"


def test_a_key_or_reason_given_as_text_is_shown_as_given(records: pytest.LogCaptureFixture) -> None:
    emit(Event.PUBLISH_FAILED, "not published", key=KEY.id, reason="ValueError", level=logging.WARNING)

    assert only(records).getMessage() == f"rotation.publish_failed: key_url={KEY.id} reason=ValueError: not published"


def test_a_record_points_at_its_caller_and_can_carry_the_traceback(records: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        emit(Event.INTERNAL_ERROR, "a trigger raised RuntimeError", level=logging.ERROR, exc_info=True)

    record = only(records)
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert Path(record.pathname) == Path(__file__)  # not rotation/log.py: the place that logged it
    assert record.funcName == "test_a_record_points_at_its_caller_and_can_carry_the_traceback"


def test_the_hook_gets_the_event_its_prose_and_the_same_fields(records: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[Event, str, dict[str, FieldValue]]] = []

    emit(
        Event.ACCOUNT_UPDATED,
        "account reports v2 and Succeeded",
        key=KEY,
        request_id=REQUEST_ID,
        version="v2",
        account=AOAI_1,
        reason=Reason.ACCOUNT_BEHIND,
        on_event=lambda event, message, fields: seen.append((event, message, dict(fields))),
        from_version=None,
    )

    record = only(records)
    [(event, message, fields)] = seen
    assert (event, message) == (Event.ACCOUNT_UPDATED, "account reports v2 and Succeeded")
    assert fields == {name: value for name, value in vars(record).items() if name in fields}
    assert set(fields) == {"event", "key", "request_id", "version", "account", "reason"}


@pytest.fixture
def undo_redaction() -> Iterator[None]:
    """Takes the filters ``install_redaction`` put on the named loggers away again after the test."""
    yield
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        for installed in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(installed)


@pytest.mark.usefixtures("undo_redaction")
def test_the_text_of_an_event_is_redacted_like_any_other_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    install_redaction()  # after caplog's handler joined the root: the handler gets the filter

    emit(Event.PUBLISH_FAILED, "POST https://t.eventgrid.azure.net/api/events?sig=SECRET123 failed", key=KEY)

    [record] = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert record.getMessage() == (
        f"rotation.publish_failed: key_url={KEY.id}: "
        "POST https://t.eventgrid.azure.net/api/events?sig=<redacted> failed"
    )
    assert "SECRET123" not in caplog.text


# The vocabulary and its one door ------------------------------------------------------------------------------------


def test_every_event_is_a_distinct_rotation_name() -> None:
    values = [member.value for member in Event.__members__.values()]  # an alias (a repeated value) shows up here
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"rotation\.[a-z]+(_[a-z]+)*", value) for value in values)


def sources() -> list[Path]:
    return [*sorted((ROOT / "rotation").rglob("*.py")), ROOT / "function_app.py"]


def strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """Every string literal, the literal parts of f-strings included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


EVENT_LIKE = re.compile(r"rotation\.([a-z]+(?:_[a-z]+)*)")
MODULES = {module.name for module in pkgutil.iter_modules(rotation.__path__)}


def test_no_module_but_rotation_log_names_an_event_in_a_string() -> None:
    """rotation/telemetry.py names the spans and metrics (``SpanName``, ``MetricName``), in the same namespace."""
    found = []
    for path in sources():
        if path in (ROOT / "rotation" / "log.py", ROOT / "rotation" / "telemetry.py"):
            continue
        for node in strings(ast.parse(path.read_text(encoding="utf-8"))):
            match = EVENT_LIKE.match(node.value)
            if match and match.group(1) not in MODULES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert found == [], "log rotation.* events with rotation.log.emit(Event.X, ...):\n" + "\n".join(found)


def test_spans_metrics_and_events_have_names_of_their_own() -> None:
    """A query for an event's name never finds a span or a metric."""
    events = {e.value for e in Event}
    others = [*(s.value for s in SpanName), *(m.value for m in MetricName)]
    assert len(set(others)) == len(others) and events.isdisjoint(others)
    assert all(re.fullmatch(r"rotation(\.[a-z]+(_[a-z]+)*)+", name) for name in others)


def test_no_module_but_rotation_log_takes_the_rotation_logger_by_its_name() -> None:
    found = []
    for path in sources():
        if path == ROOT / "rotation" / "log.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and any(isinstance(a, ast.Constant) and a.value == LOGGER_NAME for a in node.args)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], "the rotation logger is written only by rotation.log.emit: " + ", ".join(found)


def test_every_event_is_logged_somewhere() -> None:
    used = {
        node.attr
        for path in sources()
        if path != ROOT / "rotation" / "log.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Event"
    }
    assert set(Event.__members__) - used == set()

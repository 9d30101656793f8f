"""No secret leaves through an error message or a log line, and publishing an outcome never fails a rotation.

The publisher is tested through its transport (an ``HttpTransport`` whose ``send`` raises), never by mocking the SDK
client or patching the code under test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import HttpTransport

from rotation.errors import ConfigError
from rotation.log import REDACTED_LOGGERS, RedactingFilter, install_redaction
from rotation.notify import OutcomePublisher
from rotation.redact import clipped, redacted

ENDPOINT = "https://topic.westeurope-1.eventgrid.azure.net/api/events"
TOPIC_KEY = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs="
OUTCOME = {"request_id": "req-1", "key": "https://kv-prod.vault.azure.net/keys/cmk", "status": "succeeded"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "https://t.eventgrid.azure.net/api/events?sv=2022&sig=SECRET123",
            "https://t.eventgrid.azure.net/api/events?sv=2022&sig=<redacted>",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=abc/def+g==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=<redacted>;EndpointSuffix=core.windows.net",
        ),
        (
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=xyz",
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=<redacted>",
        ),
        (
            "BlobEndpoint=https://st.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=abc",
            "BlobEndpoint=https://st.blob.core.windows.net/;SharedAccessSignature=<redacted>&sig=<redacted>",
        ),
        ("POST /api/rotate?code=fn-key-123 HTTP/1.1", "POST /api/rotate?code=<redacted> HTTP/1.1"),
        ("Authorization: Bearer abc.def-ghi=", "Authorization: <redacted>"),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2ln", "token <redacted>"),
        ("password=hunter2 client_secret=s3cr3t", "password=<redacted> client_secret=<redacted>"),
        (f"the topic key {TOPIC_KEY} was refused", "the topic key <redacted> was refused"),
    ],
)
def test_anything_shaped_like_a_secret_is_redacted(text: str, expected: str) -> None:
    assert redacted(text) == expected


def test_what_is_not_a_secret_is_kept() -> None:
    text = (
        "version https://kv-prod.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef of /subscriptions/"
        "00000000-0000-0000-0000-000000000001/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/"
        "aoai-1 was refused: 403 Forbidden (ROTATION_EVENTS_KEY='')"
    )
    assert redacted(text) == text


def test_clipped_redacts_then_cuts_with_an_ellipsis() -> None:
    assert clipped("short") == "short"
    assert clipped("a" * 300) == "a" * 200 + "\u2026"
    assert clipped("abcdef", limit=3) == "abc\u2026"
    cut = clipped("x" * 190 + "&sig=" + "S" * 50)
    assert cut == "x" * 190 + "&sig=<reda\u2026"
    assert "S" not in cut


class FailingTransport(HttpTransport[Any, Any]):
    """A transport whose ``send`` raises ``error``, as requests does for a URL it cannot send to."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.sent = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.sent += 1
        raise self.error

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [
        ValueError("Failed to parse: 'example..com', label empty or too long (url ?sv=1&sig=SECRET123)"),
        ServiceRequestError("connection refused for ?sig=SECRET123"),
        RuntimeError("anything\nelse sig=SECRET123"),
    ],
    ids=["ValueError", "AzureError", "RuntimeError"],
)
def test_a_publishing_failure_of_any_kind_is_logged_and_never_raised(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FailingTransport(error)
    publisher = OutcomePublisher(
        ENDPOINT, AzureKeyCredential(TOPIC_KEY), app_name="cmk-rotator", transport=transport, retry_total=0
    )

    with caplog.at_level(logging.WARNING, logger="rotation"):
        assert publisher.publish("succeeded", OUTCOME) is False

    assert transport.sent == 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("rotation.publish_failed")]
    fields = vars(record)
    assert fields["request_id"] == "req-1"
    assert (fields["status"], fields["error_class"]) == ("succeeded", type(error).__name__)
    text = record.getMessage()  # the Functions worker forwards only this text: it must stand on its own
    for fragment in ("req-1", "succeeded", type(error).__name__, "sig=<redacted>"):
        assert fragment in text
    assert "\n" not in text
    assert "SECRET123" not in text + fields["error"]


def test_a_publisher_that_cannot_be_built_raises_config_error_naming_the_endpoint() -> None:
    with pytest.raises(ConfigError) as info:
        OutcomePublisher(ENDPOINT, object(), app_name="cmk-rotator")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"ROTATION_EVENTS_ENDPOINT='{ENDPOINT}': the outcome-events client cannot be built")
    assert "ValueError" in message


@pytest.fixture
def redaction() -> Iterator[None]:
    install_redaction()
    yield
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        for installed in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(installed)


@pytest.mark.usefixtures("redaction")
def test_urllib3_request_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")

    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s" %s %s', "https", "st.queue.core.windows.net", 443, "GET /q?sv=1&sig=abc HTTP/1.1", 200, 0
    )

    [record] = [r for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert record.getMessage() == 'https://st.queue.core.windows.net:443 "GET /q?sv=1&sig=<redacted> HTTP/1.1" 200 0'
    assert record.args == ()
    assert "sig=abc" not in caplog.text


@pytest.mark.usefixtures("redaction")
def test_redaction_is_installed_once_and_never_breaks_a_logging_call(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    for name in REDACTED_LOGGERS:
        assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters) == 1

    with caplog.at_level(logging.WARNING, logger="azure"):
        logging.getLogger("azure").warning("%s and %s sig=abc", "only one argument")

    [record] = [r for r in caplog.records if r.name == "azure"]
    assert record.getMessage() == "%s and %s sig=<redacted> (arguments dropped: they do not match the format)"


def test_a_child_loggers_record_is_redacted_by_the_root_handlers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    install_redaction()  # after caplog's handler joined the root: the handler gets the filter

    logging.getLogger("azure.storage.queue._shared.base_client").debug("GET %s", "/q?sv=1&sig=child-secret")

    assert "child-secret" not in caplog.text
    assert "sig=<redacted>" in caplog.text

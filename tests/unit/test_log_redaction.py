"""dunning.logs: log records name messages by id and never print payloads or unsafe exception texts."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy

from dunning.contract import InvalidEvent
from dunning.logs import RedactingFilter, describe_exception, install, installed, redact_record, safe_value

EMAIL = "ada.lovelace@example.org"
NAME = "Ada Lovelace"
ENVELOPE = {"id": "evt_1", "type": "customer.upserted", "data": {"customer": {"email": EMAIL, "name": NAME}}}


def _message() -> Message[object]:
    return Message(
        queue_name="billing_events",
        actor_name="ingest_event",
        args=(ENVELOPE,),
        kwargs={"note": NAME},
        options={},
        message_id="mid-123",
    )


def _record(msg: object, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("dramatiq.worker.WorkerThread", logging.ERROR, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def _text(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(redact_record(record))


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing to a string, with this process's record factory restored afterwards."""
    factory, hooks = logging.getLogRecordFactory(), (sys.excepthook, threading.excepthook)
    logging.setLogRecordFactory(logging.LogRecord)  # as if nothing had installed redaction yet
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(factory)
        sys.excepthook, threading.excepthook = hooks


def test_dramatiq_messages_appear_as_actor_and_id() -> None:
    message = _message()
    assert EMAIL in str(message)  # what Dramatiq itself would print
    for value in (message, MessageProxy(message)):
        text = _text(_record("Failed to process message %s with unhandled exception.", value))
        assert text == "Failed to process message ingest_event[mid-123] with unhandled exception."


def test_payloads_appear_as_their_type_and_size() -> None:
    assert _text(_record("Received args=%r kwargs=%r.", (ENVELOPE,), {"note": NAME})) == (
        "Received args=<tuple of 1> kwargs=<dict of 1>."
    )
    # A single mapping argument printed whole (logging unpacks it into record.args).
    assert _text(_record("event %s", ENVELOPE)) == "event <dict of 3>"
    assert _text(_record("raw %r", EMAIL.encode())) == f"raw <bytes of {len(EMAIL)}>"
    # Named placeholders keep their keys; values are checked one by one.
    assert _text(_record("job %(job)s: %(payload)s", {"job": 7, "payload": ENVELOPE})) == "job 7: <dict of 3>"


def test_ids_counts_and_lists_of_ids_are_kept() -> None:
    assert (
        _text(_record("job %s parked after %d runs (%.1fs)", "j42", 3, 1.5))
        == "job j42 parked after 3 runs (1.5s)"
    )
    assert _text(_record("Re-enqueueing %r on queue %r.", ["m1", "m2"], "mail")) == (
        "Re-enqueueing ['m1', 'm2'] on queue 'mail'."
    )


def test_exception_arguments_keep_only_safe_text() -> None:
    ours = InvalidEvent("data.customer.email", "value is not a valid email address")
    assert (
        _text(_record("refused: %s", ours))
        == "refused: data.customer.email: value is not a valid email address"
    )
    theirs = ValueError(f"duplicate key {EMAIL}")
    assert _text(_record("failed: %s", theirs)) == "failed: <ValueError: redacted>"
    assert _text(_record(theirs)) == "<ValueError: redacted>"  # logger.error(exc)
    assert safe_value(ConnectionRefusedError(111, "Connection refused")) == "[Errno 111] Connection refused"
    assert describe_exception(KeyboardInterrupt()) == "KeyboardInterrupt"  # nothing to hide
    assert describe_exception(KeyError(EMAIL)) == "KeyError: <redacted>"


def test_tracebacks_keep_frames_and_types_but_not_unsafe_texts() -> None:
    def fail() -> None:
        try:
            raise KeyError(EMAIL)
        except KeyError as exc:
            raise RuntimeError(f"could not save {NAME}") from exc

    try:
        fail()
    except RuntimeError:
        import sys

        record = _record("job %s failed", 9, exc_info=sys.exc_info())
    text = _text(record)
    assert EMAIL not in text and NAME not in text
    assert text.startswith("job 9 failed\nTraceback (most recent call last):")
    assert "KeyError: <redacted>" in text and "RuntimeError: <redacted>" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert ", in fail\n" in text  # the frames are still there
    assert record.exc_info is None  # no formatter can print the original


def test_our_exceptions_keep_their_text_in_tracebacks() -> None:
    try:
        raise InvalidEvent("type", "unknown event type")
    except InvalidEvent:
        import sys

        text = _text(_record("refused", exc_info=sys.exc_info()))
    assert "dunning.contract.InvalidEvent: type: unknown event type" in text


def test_urls_lose_userinfo_and_query() -> None:
    url = httpx.URL(f"https://user:pw@billing.example/invoices/in_1/pay?email={EMAIL}")
    assert _text(_record("HTTP Request: %s %s", "POST", url)) == (
        "HTTP Request: POST https://billing.example/invoices/in_1/pay"
    )


def test_install_redacts_every_logger_and_is_idempotent(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.error("before: %s", _message())
    assert EMAIL in stream.getvalue()  # not installed yet: the test can see a leak
    install()
    install()
    assert installed()
    stream.truncate(0)
    stream.seek(0)
    logger.error("Failed to process message %s with unhandled exception.", _message())
    assert stream.getvalue() == "Failed to process message ingest_event[mid-123] with unhandled exception.\n"


def test_filter_redacts_records_reaching_a_handler(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.handlers[0].addFilter(RedactingFilter())
    logger.warning("Message %s was skipped.", _message())
    assert stream.getvalue() == "Message ingest_event[mid-123] was skipped.\n"


@pytest.mark.parametrize("where", ["main", "thread"])
def test_uncaught_exceptions_print_redacted_tracebacks(where: str) -> None:
    """What a crash prints to stderr (next to the logs) carries frames and types, not the text."""
    code = (
        "import threading\n"
        "from dunning.logs import install\n"
        "install()\n"
        "def crash():\n"
        f"    raise ValueError({EMAIL!r})\n"
        + ("crash()\n" if where == "main" else "t = threading.Thread(target=crash); t.start(); t.join()\n")
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert EMAIL not in result.stderr
    assert "ValueError: <redacted>" in result.stderr and ", in crash" in result.stderr
    assert result.returncode == (1 if where == "main" else 0)
    if where == "thread":
        assert result.stderr.startswith("Exception in thread Thread-1")


def test_access_log_hides_link_tokens_and_query_strings() -> None:
    """uvicorn's access log would print every customer link's token (a credential for weeks)."""
    import logging

    from dunning.logs import redact_record

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/l/eyJwIjoidXBkYXRlIn0.c2lnbmF0dXJl?utm=1", "1.1", 303),
        None,
    )
    text = redact_record(record).getMessage()
    assert "eyJwIjoidXBkYXRlIn0" not in text and "utm" not in text
    assert '"GET /l/<token> HTTP/1.1" 303' in text
    other = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/events", "1.1", 202),
        None,
    )
    assert '"POST /events HTTP/1.1" 202' in redact_record(other).getMessage()

"""The real servers the suite runs on behave as the other tests assume."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from tests.support.servers import PostgresServer, RedisProcess, SmtpServer

pytestmark = pytest.mark.integration


# -- Redis -------------------------------------------------------------------


def test_redis_answers_ping(redis_server: RedisProcess) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        assert redis_server.url.startswith("redis://127.0.0.1:")
    finally:
        client.close()


def test_redis_restart_with_wipe_comes_back_empty_on_same_url(redis_server: RedisProcess) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url)
    try:
        client.set("survivor", "1")
        assert redis_server.restart(wipe=True) == url
        assert client.get("survivor") is None  # the client reconnects to the same URL
        assert client.dbsize() == 0
    finally:
        client.close()


def test_persistent_redis_keeps_data_across_kill_but_not_wipe(tmp_path: Path) -> None:
    with RedisProcess(tmp_path / "redis", persistent=True) as server:
        client = server.client()
        try:
            client.set("queued", "message")
            first_pid = server.pid
            server.kill()
            assert not server.running
            server.restart()
            assert server.pid != first_pid
            assert client.get("queued") == b"message"  # AOF fsynced on every write
            server.restart(wipe=True)
            assert client.get("queued") is None
        finally:
            client.close()
    assert not server.running


def test_redis_process_reports_start_failure_with_its_log(tmp_path: Path, redis_server: RedisProcess) -> None:
    clash = RedisProcess(tmp_path / "clash", port=redis_server.port)  # port already taken
    with pytest.raises(RuntimeError, match="address in use"):
        clash.start()
    assert not clash.running


# -- PostgreSQL --------------------------------------------------------------


def test_postgres_database_accepts_queries(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_postgres_restart_keeps_data(postgres_server: PostgresServer, pg_url: str) -> None:
    # pool_pre_ping: after a server restart the pooled connections are dead,
    # and that is what production engines must survive too.
    engine = create_engine(pg_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("create table kept (id int primary key, note text)"))
            conn.execute(text("insert into kept values (1, 'before restart')"))
        postgres_server.restart()
        with engine.connect() as conn:
            assert conn.execute(text("select note from kept where id = 1")).scalar_one() == "before restart"
    finally:
        engine.dispose()


def test_postgres_drop_database_disconnects_lingering_sessions(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("isolation_probe")
    lingering = psycopg.connect(postgres_server.conninfo("isolation_probe"))
    try:
        assert lingering.execute("select current_database()").fetchone() == ("isolation_probe",)
        postgres_server.drop_database("isolation_probe")  # a test that forgot to close must not block this
    finally:
        lingering.close()
    with psycopg.connect(postgres_server.conninfo()) as admin:
        names = [row[0] for row in admin.execute("select datname from pg_database")]
    assert "isolation_probe" not in names


# -- SMTP --------------------------------------------------------------------


def _message(subject: str, to: str = "customer@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Billing <billing@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Your payment failed. Ünïcode survives.")
    return msg


def test_smtp_records_sent_message(smtp: SmtpServer) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(_message("Payment failed"), to_addrs=["customer@example.com", "cc@example.com"])
    [mail] = smtp.wait_for(1, timeout=5)
    assert mail.mail_from == "billing@example.com"
    assert mail.rcpt_tos == ("customer@example.com", "cc@example.com")
    assert mail.message["Subject"] == "Payment failed"
    assert "Ünïcode survives" in mail.message.get_content()
    assert smtp.url == f"smtp://127.0.0.1:{smtp.port}"


def test_smtp_fail_next_refuses_once_with_451(smtp: SmtpServer) -> None:
    smtp.fail_next(1)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(_message("first try"))
        assert refused.value.smtp_code == 451
        client.send_message(_message("second try"))
    [mail] = smtp.wait_for(1, timeout=5)
    assert mail.message["Subject"] == "second try"


def test_smtp_refuse_all_at_rcpt_and_reset(smtp: SmtpServer) -> None:
    smtp.refuse_all(550, at="rcpt")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(_message("never"))
        assert refused.value.recipients["customer@example.com"][0] == 550
    smtp.reset_faults()
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(_message("after reset"))
    assert [m.message["Subject"] for m in smtp.wait_for(1, timeout=5)] == ["after reset"]


def _send_expecting_timeout(smtp: SmtpServer, subject: str) -> float:
    started = time.monotonic()
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=0.5)
    try:
        # smtplib reports a read timeout as a disconnection, not as TimeoutError.
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.send_message(_message(subject))
    finally:
        client.close()  # not QUIT: the server is still busy with our DATA
    return time.monotonic() - started


def test_smtp_delay_makes_client_time_out_without_delivery(smtp: SmtpServer) -> None:
    smtp.set_delay(1.0)
    assert _send_expecting_timeout(smtp, "slow") < 1.0
    time.sleep(1.2)  # past the delay: the server would have accepted it by now
    assert smtp.messages == []


def test_smtp_delay_after_accept_delivers_although_client_timed_out(smtp: SmtpServer) -> None:
    smtp.set_delay(1.0, after_accept=True)
    assert _send_expecting_timeout(smtp, "ack lost") < 1.0
    # Delivered anyway: a sender that retries on timeout sends this email twice.
    assert [m.message["Subject"] for m in smtp.wait_for(1, timeout=5)] == ["ack lost"]


def test_smtp_wait_for_reports_what_arrived(smtp: SmtpServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 message"):
        smtp.wait_for(1, timeout=0.2)

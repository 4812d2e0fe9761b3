"""Who may see and act on the dashboard (``/ops``) of a real ``dunning serve``: read-only, login, CSRF.

The browser test (test_dashboard_browser.py) walks the happy path; this one
knocks on every door with plain HTTP. A client elsewhere is played with
``X-Forwarded-For`` as in test_ops_access.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from tests.support.ops_dashboard import TOKEN, serve

from dunning.signing import SIGNATURE_HEADER

pytestmark = pytest.mark.integration

REMOTE = {"X-Forwarded-For": "203.0.113.7"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def redis_db(redis_server: Any) -> Iterator[str]:
    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def _dead_letters(db_url: str) -> dict[int, Any]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = {r.id: r.requeued_at for r in conn.execute(text("select id, requeued_at from dead_letters"))}
    engine.dispose()
    return rows


def test_without_a_token_the_dashboard_is_read_only_and_local(
    tmp_path: Path, sqlite_url: str, redis_db: str
) -> None:
    with serve(tmp_path, sqlite_url, redis_db, DUNNING_INGEST_SECRET="ingest-secret") as (base, seeded):
        # `dunning serve` counts its ingest refusals in Redis, and /metrics reports them.
        bad = httpx.post(f"{base}/events", content=b"{}", headers={SIGNATURE_HEADER: "t=1,v1=00"})
        assert bad.status_code == 401
        metrics = httpx.get(f"{base}/metrics").text
        assert 'dunning_ingest_refusals_total{reason="bad_signature"} 1.0' in metrics
        assert "dunning_scheduler_lag_seconds" in metrics

        page = httpx.get(f"{base}/ops")
        assert page.status_code == 200
        assert "Read-only" in page.text and seeded["dead_ref"] in page.text
        assert "/requeue" not in page.text and 'name="csrf"' not in page.text
        assert page.headers["cache-control"] == "no-store"
        assert httpx.get(f"{base}/ops", headers=REMOTE).status_code == 401
        # Nothing to sign in to, and no action without a session.
        assert httpx.post(f"{base}/ops/login", data={"token": TOKEN, "csrf": "x"}).status_code == 404
        acted = httpx.post(f"{base}/ops/dead-letters/{seeded['dead_ref']}/purge", data={"csrf": "x"})
        assert acted.status_code == 401
        # The chart library is served from the package, with its licence.
        lib = httpx.get(f"{base}/ops/static/vendor/chart.umd.min.js")
        assert lib.status_code == 200 and "Chart.js v4.6.2" in lib.text[:300]
        assert "MIT" in httpx.get(f"{base}/ops/static/vendor/chart.js-LICENSE.md").text
    assert _dead_letters(sqlite_url)  # still there


def test_with_a_token_only_a_signed_in_session_with_its_csrf_token_acts(
    tmp_path: Path, sqlite_url: str, redis_db: str
) -> None:
    with serve(tmp_path, sqlite_url, redis_db, DUNNING_OPS_TOKEN=TOKEN) as (base, seeded):
        ref = seeded["dead_ref"]
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        # No session: the login form, and nothing of the business, from anywhere.
        for headers in ({}, REMOTE):
            login = httpx.get(f"{base}/ops", headers=headers)
            assert login.status_code == 401 and 'name="token"' in login.text
            assert ref not in login.text and "sub_dash" not in login.text
        # A script with the bearer token reads the page, without buttons.
        read = httpx.get(f"{base}/ops", headers=bearer)
        assert read.status_code == 200 and ref in read.text and "/requeue" not in read.text
        # ... and cannot act: actions need a session (and its CSRF token).
        assert httpx.post(f"{base}/ops/dead-letters/{ref}/purge", headers=bearer, data={}).status_code == 401

        with httpx.Client(base_url=base) as browser:
            form = browser.get("/ops")
            login_csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            assert browser.cookies["dunning_ops_login"] == login_csrf
            # Login CSRF is double-submit: the form's value must match the cookie's.
            assert browser.post("/ops/login", data={"token": TOKEN, "csrf": "other"}).status_code == 403
            wrong = browser.post("/ops/login", data={"token": TOKEN[:-1] + "x", "csrf": login_csrf})
            assert wrong.status_code == 401 and "not the ops token" in wrong.text
            ok = browser.post("/ops/login", data={"token": TOKEN, "csrf": login_csrf})
            assert ok.status_code == 303 and ok.headers["location"] == "/ops"
            set_cookie = ok.headers["set-cookie"].lower()
            assert "dunning_ops_session=" in set_cookie
            assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/ops" in set_cookie
            assert TOKEN.lower() not in set_cookie

            page = browser.get("/ops")
            assert page.status_code == 200 and f"/ops/dead-letters/{ref}/requeue" in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

            for data in ({}, {"csrf": "forged"}, {"csrf": login_csrf}):
                refused = browser.post(f"/ops/dead-letters/{ref}/purge", data=data)
                assert refused.status_code == 403, data
            assert (
                browser.post(f"/ops/dead-letters/{ref}/purge", content=b"x" * 5000, headers=FORM).status_code
                == 403
            )
            assert _dead_letters(sqlite_url), "a refused POST changed nothing"
            # The header works too (for fetch), and an unknown action or ref is not found.
            assert (
                browser.post(f"/ops/dead-letters/{ref}/delete", headers={"X-CSRF-Token": csrf}).status_code
                == 404
            )

            done = browser.post(f"/ops/dead-letters/{ref}/purge", data={"csrf": csrf})
            assert done.status_code == 303 and done.headers["location"].startswith(
                f"/ops?done=purged&ref={ref}"
            )
            assert _dead_letters(sqlite_url) == {}
            again = browser.get(done.headers["location"])
            assert f"Dead letter {ref} purged." in again.text
            gone = browser.post(f"/ops/dead-letters/{ref}/requeue", data={"csrf": csrf})
            assert "done=missing" in gone.headers["location"]

            # Signing out needs the CSRF token too, then the session is gone.
            assert browser.post("/ops/logout", data={}).status_code == 403
            assert browser.post("/ops/logout", data={"csrf": csrf}).status_code == 303
            assert browser.get("/ops").status_code == 401

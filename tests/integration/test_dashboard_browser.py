"""The dashboard in headless Chromium (Playwright) against a real ``dunning serve``, Redis and each database.

Signs in with the ops token, sees the charts drawn, searches a customer, has a
forged CSRF token and a session-less request refused, requeues a dead letter.
Screenshots go to ``artifacts/screenshots/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.support.ops_dashboard import TOKEN, serve

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Counts the canvas's painted pixels: a chart that failed to draw leaves it all transparent.
PAINTED = """(id) => {
  const c = document.getElementById(id);
  const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) n++;
  return n;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The system's Chromium: Playwright never downloads a browser here.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def redis_db(redis_server: Any) -> Iterator[str]:
    """A Redis database of its own (9) on the session's server, emptied after the test."""
    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def test_sign_in_see_charts_search_and_requeue_a_dead_letter(
    browser: Any, db_url: str, redis_db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tag = "pg" if db_url.startswith("postgresql") else "sqlite"
    with serve(tmp_path, db_url, redis_db, DUNNING_OPS_TOKEN=TOKEN) as (base, seeded):
        ref = seeded["dead_ref"]
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Script errors, and any static file (Chart.js, our script, the CSS) that failed to load.
        page.on(
            "response", lambda r: errors.append(r.url) if "/static/" in r.url and r.status != 200 else None
        )
        page.on(
            "requestfailed", lambda r: errors.append(f"{r.url} {r.failure}") if "/static/" in r.url else None
        )

        # The token is set: a browser without a session gets the login form and nothing else.
        response = page.goto(f"{base}/ops")
        assert response.status == 401
        assert page.locator("input[name=token]").count() == 1
        assert "sub_dash" not in page.content() and ref not in page.content()
        page.screenshot(path=str(SHOTS / f"ops-login-{tag}.png"))

        page.fill("input[name=token]", TOKEN[:-1] + "x")
        page.click("button[type=submit]")
        assert "not the ops token" in page.locator(".error").inner_text()

        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ops")
        assert page.title() == "Dunning: dashboard"
        cookie = next(c for c in context.cookies() if c["name"] == "dunning_ops_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ops"
        assert TOKEN not in cookie["value"]

        # Queues, scheduler lag, workers, the dead letter with its buttons.
        assert page.locator("#queues tr").count() == 4  # header + three queues
        assert "Scheduler lag" in page.locator("#scheduler-lag").inner_text()
        assert "No worker process has a heartbeat" in page.locator("#workers").inner_text()
        row = page.locator(f"#dl-{ref}")
        assert "missing" in row.inner_text() and row.locator("button[name=requeue]").count() == 1

        # The charts: Chart.js (served from the package) drew both canvases, with our numbers.
        assert page.evaluate("typeof Chart") == "function"
        for canvas in ("funnel-chart", "recovery-chart"):
            assert page.evaluate(PAINTED, canvas) > 500, canvas
        funnel = page.evaluate("Chart.getChart('funnel-chart').data.datasets[0].data")
        assert funnel[:4] == [2, 0, 1, 1]  # opened, suspended, still open, recovered
        recovered = page.evaluate(
            "Chart.getChart('recovery-chart').data.datasets.map(d => [d.label, d.data])"
        )
        assert [(label, sum(values)) for label, values in recovered] == [("EUR", 25.0)]
        page.screenshot(path=str(SHOTS / f"ops-dashboard-{tag}.png"), full_page=True)

        # Search a customer: its subscription, case, timeline and upcoming notices.
        page.fill("input[name=q]", "dash@example.com")
        page.click("form[role=search] button")
        results = page.locator("#search-results")
        assert "Subscription sub_dash" in results.inner_text()
        assert "in_dash" in results.inner_text()
        assert page.locator("table.timeline tr").count() >= 2
        assert "renewal_notice" in page.locator("table.upcoming").inner_text()
        page.screenshot(path=str(SHOTS / f"ops-search-{tag}.png"), full_page=True)

        # A forged CSRF token is refused, and nothing happens.
        page.goto(f"{base}/ops")
        page.eval_on_selector(f"#dl-{ref} form[action$=requeue] input[name=csrf]", "e => e.value = 'forged'")
        with page.expect_navigation():
            page.click(f"#dl-{ref} button[name=requeue]")
        assert "CSRF" in page.inner_text("body")
        page.goto(f"{base}/ops")
        assert page.locator(f"#dl-{ref}").count() == 1

        # Another browser without a session: the same POST is refused.
        stranger = browser.new_context().new_page()
        assert stranger.goto(f"{base}/ops").status == 401  # the login form, same origin for the fetch
        status = stranger.evaluate(
            "async (url) => (await fetch(url, {method: 'POST', headers: {'Content-Type':"
            " 'application/x-www-form-urlencoded'}, body: 'csrf=x'})).status",
            f"{base}/ops/dead-letters/{ref}/requeue",
        )
        assert status == 401
        stranger.context.close()

        # With the session and its token: requeued, back on the broker's queue.
        with page.expect_navigation():
            page.click(f"#dl-{ref} button[name=requeue]")
        assert f"Dead letter {ref} sent back" in page.locator("#notice").inner_text()
        assert page.locator(f"#dl-{ref}").count() == 0
        client = redis.Redis.from_url(redis_db)
        queued = [
            client.hget("dramatiq:billing_events.msgs", mid)
            for mid in client.lrange("dramatiq:billing_events", 0, -1)
        ]
        client.close()
        assert any(b'"evt_parked"' in body for body in queued if body)
        page.screenshot(path=str(SHOTS / f"ops-requeued-{tag}.png"), full_page=True)
        assert not errors, errors
        context.close()

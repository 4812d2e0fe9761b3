"""The ops page and /metrics of a real ``dunning serve`` process, on a real port: who gets an answer.

Everything here connects from the loopback. A client elsewhere is what uvicorn
reports when a reverse proxy on the host forwards one (``X-Forwarded-For``, which
``dunning serve`` trusts from the loopback only), so that is how the tests play
one. The address rule itself is unit-tested in ``tests/unit/test_opsauth.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from tests.support.servers import free_port

from dunning.runtime import build_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade

pytestmark = pytest.mark.integration

TOKEN = "ops-token-0123456789abcdef"
REMOTE = {"X-Forwarded-For": "203.0.113.7"}  # a client elsewhere, as a proxy on the host reports it
PRIVATE_PATHS = ("/metrics", "/")


@contextmanager
def _serve(tmp_path: Path, redis_url: str, **extra: str) -> Iterator[str]:
    """``dunning serve`` as a process, on a free loopback port; yields its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "FORWARDED_ALLOW_IPS"))}
    env |= {
        "DUNNING_HOME": str(tmp_path),
        "DUNNING_DATABASE_URL": f"sqlite:///{tmp_path / 'dunning.db'}",
        "DUNNING_REDIS_URL": redis_url,
        **extra,
    }
    rt = build_runtime(load_settings(env))
    upgrade(rt.engine)
    rt.close()
    port = free_port()
    log = (tmp_path / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dunning", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dunning serve did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_without_a_token_ops_data_is_served_to_loopback_clients_only(tmp_path: Path, redis_server) -> None:
    with _serve(tmp_path, redis_server.url) as base:
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert "dunning_cases" in metrics.text
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "Dunning: operations" in page.text

        for path in PRIVATE_PATHS:
            answer = httpx.get(f"{base}{path}", headers=REMOTE)
            assert answer.status_code == 401, path
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="dunning-ops"'
            assert "DUNNING_OPS_TOKEN" in answer.text
            assert "dunning_" not in answer.text and "operations" not in answer.text
            # No token is configured, so none is accepted either.
            with_token = httpx.get(f"{base}{path}", headers={**REMOTE, "Authorization": f"Bearer {TOKEN}"})
            assert with_token.status_code == 401, path

        health = httpx.get(f"{base}/healthz", headers=REMOTE)
        assert (health.status_code, health.text) == (200, "ok")


def test_with_a_token_everyone_must_present_it(tmp_path: Path, redis_server) -> None:
    with _serve(tmp_path, redis_server.url, DUNNING_OPS_TOKEN=TOKEN) as base:
        for path in PRIVATE_PATHS:
            for headers in ({}, REMOTE):  # the loopback is no exception once a token is set
                missing = httpx.get(f"{base}{path}", headers=headers)
                assert missing.status_code == 401, (path, headers)
                assert missing.headers["WWW-Authenticate"] == 'Bearer realm="dunning-ops"'

                wrong = httpx.get(
                    f"{base}{path}", headers={**headers, "Authorization": f"Bearer {TOKEN[:-1]}x"}
                )
                assert wrong.status_code == 401, (path, headers)
                assert (
                    wrong.headers["WWW-Authenticate"] == 'Bearer realm="dunning-ops", error="invalid_token"'
                )
                assert "dunning_" not in wrong.text

                basic = httpx.get(f"{base}{path}", headers=headers, auth=("ops", TOKEN))
                assert basic.status_code == 401, (path, headers)

                right = httpx.get(f"{base}{path}", headers={**headers, "Authorization": f"Bearer {TOKEN}"})
                assert right.status_code == 200, (path, headers)
        scrape = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert "# TYPE dunning_queue_messages gauge" in scrape.text

        # The health check stays open and says nothing but "ok".
        health = httpx.get(f"{base}/healthz", headers=REMOTE)
        assert (health.status_code, health.text) == (200, "ok")

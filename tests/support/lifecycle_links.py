"""A test-only registration of the annual-switch pages and job, and ``dunning serve`` with it.

The lead registers the real lifecycle workflow in :mod:`dunning.workflows.all`;
until then the tests add this one: in the test process (the harness's worker
runs the ``annual_switch`` job and sends the confirmation email), and in the
``dunning serve`` child process, started through this module
(``python -m tests.support.lifecycle_links serve --port N``).

The confirmation email is rendered here in a few plain lines (the lifecycle
templates are another part of the work), from the facts the switch recorded.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dunning.engine import registry
from dunning.engine.registry import Workflow
from dunning.workflows.lifecycle import annual_switch, links


def _render(rt: Any, session: Any, outbox: Any, now: datetime) -> None:
    if outbox.subject is not None:
        return
    facts = annual_switch.confirmation_facts(session, outbox)
    assert facts is not None, outbox.key
    outbox.subject = "You are switching to yearly billing"
    outbox.text = f"{facts['plan']}: {facts['annual_price_minor']} {facts['currency']} a year from {facts['effective_at']}\n"
    outbox.html = f"<p>{outbox.text}</p>"


TEST_WORKFLOW = Workflow(
    name="lifecycle_test",
    jobs=annual_switch.JOBS,
    links={**links.LINK_PAGES, **annual_switch.LINK_PAGES},
    notice_kinds=(annual_switch.CONFIRMED_KIND,),
    render_notice=_render,
)

_CACHED: tuple[Callable[..., Any], ...] = (
    registry.workflows,
    registry.event_handlers,
    registry.job_handler,
    registry.notice_owner,
    registry.link_page,
    registry.link_purposes,
)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The registry with :data:`TEST_WORKFLOW` added, for the block (in this process)."""
    import dunning.workflows.all as everything

    before = everything.WORKFLOWS
    everything.WORKFLOWS = (*before, TEST_WORKFLOW)
    for cached in _CACHED:
        cached.cache_clear()  # type: ignore[attr-defined]
    try:
        registry.check()
        yield
    finally:
        everything.WORKFLOWS = before
        for cached in _CACHED:
            cached.cache_clear()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: Message  # case-insensitive
    text: str


class LinkServer:
    """``dunning serve`` (with :data:`TEST_WORKFLOW` registered) as a child process on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        from tests.support.servers import free_port  # not in the child, which needs none of it

        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("DUNNING_")}
        root = str(Path(__file__).resolve().parents[2])
        base["PYTHONPATH"] = os.pathsep.join(p for p in (root, base.get("PYTHONPATH")) if p)
        handle = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.lifecycle_links", "serve", "--port", str(self.port)],
            env={**base, **env},
            cwd=root,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"dunning serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"dunning serve did not start: {log.read_text()[-2000:]}"
            with contextlib.suppress(OSError):
                self.get("/l/probe")
                return
            time.sleep(0.1)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request exactly as given, no redirects followed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return Answer(answer.status, answer.headers, answer.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post_form(self, path: str, fields: dict[str, str]) -> Answer:
        """POST a url-encoded form, as a browser submits one."""
        return self.request(
            "POST",
            path,
            urlencode(fields).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def main() -> None:
    """``dunning`` with :data:`TEST_WORKFLOW` registered for the life of the process."""
    from dunning.cli import main as dunning

    with registered():
        dunning()


if __name__ == "__main__":
    main()

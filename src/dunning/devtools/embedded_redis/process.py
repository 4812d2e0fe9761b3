"""A private ``redis-server`` child process for the demo and the test suite, with hooks for fault tests."""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis

from .common import DEFAULT_MAXCLIENTS, Address, find_redis_server, free_port, ping, tail

_PR_SET_PDEATHSIG = 1


def _server_pid(address: Address) -> int | None:
    """The ``process_id`` the server at ``address`` reports, or None if it does not answer."""
    client = address.client()
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when we die, or None.

    This keeps a hard-killed test run (``kill -9``, CI timeout) from leaving
    ``redis-server`` behind. The kernel ties it to the *thread* that forked, so
    it is only used from the main thread, which lives as long as the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return hook


class RedisProcess:
    """A private ``redis-server`` child on 127.0.0.1 for the demo and the tests.

    Not daemonized: it lives as long as this object says, and dies with this
    process. By default nothing is persisted; ``persistent=True`` turns on an
    AOF fsynced on every write, so :meth:`kill` followed by :meth:`restart`
    keeps every acknowledged write — deterministic, for fault tests.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        maxclients: int = DEFAULT_MAXCLIENTS,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.persistent = persistent
        self.maxclients = maxclients
        self._port = port
        # Only a port we picked ourselves may be changed if it turns out taken.
        self._port_chosen_by_caller = port is not None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisProcess has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``; stable across restarts."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: object) -> redis.Redis:
        """A new client for this server (caller closes it)."""
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (no-op if running) and return its URL once it answers PING."""
        if self.running:
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._port_chosen_by_caller else 3
        for attempt in range(attempts):
            if self._port is None:
                self._port = free_port()
            try:
                self._spawn_and_wait(timeout)
            except _PortInUse:
                if attempt + 1 == attempts:
                    raise RuntimeError(
                        f"redis-server could not bind 127.0.0.1:{self._port}: address in use. "
                        f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                    ) from None
                self._port = None  # lost a race for a free port: pick another
                continue
            # From now on restarts reuse this port: URLs handed out stay valid.
            self._port_chosen_by_caller = True
            return self.url
        raise AssertionError("unreachable")

    def _command(self) -> list[str]:
        args = [
            str(find_redis_server()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--save",
            "",
            "--maxclients",
            str(self.maxclients),
            "--maxmemory-policy",
            "noeviction",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def _spawn_and_wait(self, timeout: float) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # Errors Redis prints before opening its logfile (bad options) land in the same file.
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=_die_with_parent_hook(),
            )
        deadline = time.monotonic() + timeout
        address = Address(port=self.port)
        while True:
            if self._proc.poll() is not None:
                with open(self.log_path, "rb") as fh:
                    fh.seek(log_offset)
                    new_log = fh.read().decode(errors="replace")
                self._proc = None
                if "Address already in use" in new_log:
                    raise _PortInUse
                raise RuntimeError(
                    f"redis-server on port {self.port} exited during start-up. "
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            # Compare pids: while ours is still failing to bind, another server
            # already on this port would answer PING and look like success.
            if ping(address) == "up" and _server_pid(address) == self._proc.pid:
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {timeout:g} s. "
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully (SIGTERM, which Redis handles like SHUTDOWN); SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown, no final flush."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def restart(self, wipe: bool = False, timeout: float = 10.0) -> str:
        """Stop (if running) and start again on the same port.

        With ``wipe=True`` the data files are deleted first, so the server comes
        back empty even when persistent — what a broker loss looks like to clients.
        """
        self.stop(timeout)
        if wipe:
            self.wipe_data()
        return self.start(timeout)

    def wipe_data(self) -> None:
        """Delete the RDB/AOF files (server must be stopped); the log is kept."""
        if self.running:
            raise RuntimeError("wipe_data() needs the server stopped")
        if not self.directory.exists():
            return
        for entry in self.directory.iterdir():
            if entry.name == "appendonlydir" and entry.is_dir():  # Redis 7 multi-part AOF
                shutil.rmtree(entry)
            elif entry.suffix in (".rdb", ".aof") or entry.name.startswith("temp-"):
                entry.unlink()

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"RedisProcess(port={self._port}, {state}, directory={str(self.directory)!r})"


class _PortInUse(Exception):
    """Internal: the chosen port was taken between choosing and binding."""

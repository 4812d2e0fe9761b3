"""The install's shared Redis: one daemonized ``redis-server`` under ``<home>/redis``.

Used when ``DUNNING_REDIS_URL`` is unset. The first process that needs it
starts it (Redis daemonizes itself, so it outlives that process), every other
process of the install reuses it. It persists to an append-only file so queued
messages survive a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from .common import DEFAULT_MAXCLIENTS, Address, find_redis_server, free_port, ping, tail

#: ``sun_path`` is 108 bytes on Linux, one of which is the terminating NUL.
#: Redis silently truncates longer paths, so we must check before asking it.
MAX_UNIX_SOCKET_PATH = 107


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

    def current_address(self) -> Address | None:
        """The address other processes would use now; None if no TCP port was ever recorded."""
        if self.socket_fits():
            return Address(socket_path=self.socket)
        try:
            return Address(port=int(self.port_file.read_text().strip()))
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


def _write_config(paths: _Paths, address: Address) -> None:
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


def _wait_until_up(paths: _Paths, address: Address, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ping(address) == "up":
            return
        pid_text = paths.pidfile.read_text().strip() if paths.pidfile.exists() else ""
        died = pid_text.isdigit() and not _pid_alive(int(pid_text))
        if died or time.monotonic() >= deadline:
            reason = "exited" if died else f"did not answer PING within {timeout:g} s"
            launch = tail(paths.launch_output) if paths.launch_output.exists() else ""
            raise RuntimeError(
                f"Embedded Redis at {address.url} ({what}) {reason}. "
                f"Last lines of {paths.logfile}:\n{tail(paths.logfile)}"
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
        if address is not None and ping(address) == "up":
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
            address = Address(port=recorded if recorded and _port_free(recorded) else free_port())
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
                f"{tail(paths.launch_output)}\nLast lines of {paths.logfile}:\n{tail(paths.logfile)}"
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
        if address is not None and ping(address) == "up":
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
        while address is not None and ping(address) != "down" and time.monotonic() < deadline:
            time.sleep(0.02)
        paths.pidfile.unlink(missing_ok=True)
        return True

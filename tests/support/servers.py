"""Real servers for the test suite: PostgreSQL and SMTP (Redis is :class:`dunning.devtools.embedded_redis.RedisProcess`).

Everything here starts genuine server software on 127.0.0.1 and free ports;
there are no mocks. Each class is usable on its own (``with PostgresServer()
as pg: ...``) and from the fixtures in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.policy
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from psycopg import sql

from dunning.devtools.embedded_redis import RedisProcess

__all__ = [
    "PostgresServer",
    "ReceivedMail",
    "RedisProcess",
    "SmtpServer",
    "find_postgres_bin_dir",
    "free_port",
    "unique_database_name",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log file at {path})"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` ("15", "9.6")."""
    parts = re.findall(r"\d+", bin_dir.parent.name)
    return tuple(int(p) for p in parts) or (0,)


def find_postgres_bin_dir() -> Path:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``PATH`` first (a hand-built or Homebrew-style install), then Debian's
    versioned directories, highest version first: Debian never puts
    ``initdb`` on ``PATH``.
    """
    on_path = shutil.which("initdb")
    candidates: list[Path] = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")), key=_version_key, reverse=True
    )
    # Last resort: the PostgreSQL build inside the ``pgserver`` wheel (a dev dependency), so
    # ``uv run pytest`` needs nothing installed by hand.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bin_dir in candidates:
        if all(os.access(bin_dir / tool, os.X_OK) for tool in _PG_TOOLS):
            return bin_dir
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: looked on PATH, in "
        "/usr/lib/postgresql/*/bin and in the pgserver wheel. The integration tests start their own "
        "PostgreSQL server; `uv sync` installs pgserver, or `apt-get install postgresql`."
    )


def unique_database_name(hint: str = "test") -> str:
    """A valid, unique PostgreSQL database name derived from ``hint`` (e.g. a test name)."""
    base = re.sub(r"[^a-z0-9_]+", "_", hint.lower()).strip("_") or "test"
    if base[0].isdigit():
        base = f"t_{base}"
    return f"{base[:50]}_{uuid.uuid4().hex[:8]}"


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

    PostgreSQL refuses to run as root, so when we are root the cluster is
    owned by and run as the ``postgres`` system user (``nobody`` if there is
    none) through ``runuser``. Durability is switched off (``fsync=off`` and
    friends): a test database only has to survive a clean restart, which
    :meth:`restart` provides. Authentication is ``trust`` as user ``postgres``.
    """

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        self.bin_dir = find_postgres_bin_dir()
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.superuser = "postgres"
        self._owns_base_dir = base_dir is None
        # Not pytest's tmp_path: /tmp/pytest-of-root is mode 0700, so the
        # unprivileged server user could not even reach its data directory.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="dunning-pg-")).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self._run_as = self._pick_os_user()
        self._running = False
        if self._owns_base_dir:
            # Lets a later run recognise this directory as an orphan if we die without cleaning up.
            (self.base_dir / "owner.pid").write_text(f"{os.getpid()}\n")

    # -- URLs ----------------------------------------------------------------

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for ``database``."""
        return f"postgresql+psycopg://{self.superuser}@{self.host}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` maintenance database."""
        return self.url("postgres")

    def conninfo(self, database: str = "postgres") -> str:
        """libpq connection string, for ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.superuser} dbname={database} connect_timeout=10"

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until it accepts connections."""
        if self._running:
            return
        self._reap_orphans()
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        self._write_settings()  # every start: the port may have been given anew
        result = self._pg(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60", "-s"
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start on {self.host}:{self.port} (pg_ctl exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\nLast lines of {self.log_path}:\n{_tail(self.log_path)}"
            )
        self._running = True
        atexit.register(self._stop_at_exit)

    def stop(self) -> None:
        """Stop the server (fast mode: running transactions are rolled back). Data is kept."""
        if not self._running:
            return
        result = self._pg("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "-s")
        if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")
        self._running = False
        atexit.unregister(self._stop_at_exit)

    def restart(self) -> None:
        """Stop fast and start again on the same port and data, as an outage would look to clients."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its temporary directory (if we created it)."""
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _reap_orphans(self) -> None:
        """Stop and delete clusters left by earlier runs that died without cleaning up.

        ``atexit`` does not run when a test run is SIGKILLed or SIGTERMed (a CI
        timeout), and ``pg_ctl`` daemonizes the server, so it would outlive us.
        Only our own ``dunning-pg-*`` directories whose recorded owner process is
        gone are touched; concurrent runs keep theirs.
        """
        for other in Path(tempfile.gettempdir()).glob("dunning-pg-*"):
            if other == self.base_dir or not other.is_dir():
                continue
            try:
                owner = int((other / "owner.pid").read_text().strip())
            except (OSError, ValueError):
                continue  # being created right now, or not one of ours
            if _process_alive(owner):
                continue
            if (other / "data" / "postmaster.pid").exists():
                self._pg("pg_ctl", "stop", "-D", str(other / "data"), "-m", "immediate", "-w", "-s")
            shutil.rmtree(other, ignore_errors=True)

    def _stop_at_exit(self) -> None:
        # Last resort when the test run ends without fixtures finalizing.
        with contextlib.suppress(Exception):  # nothing sensible to do at interpreter exit
            self.close()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PostgresServer({self.host}:{self.port}, running={self._running}, data={str(self.data_dir)!r})"
        )

    # -- databases -----------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._check_name(name)
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any sessions a test left open (no error if absent)."""
        self._check_name(name)
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @staticmethod
    def _check_name(name: str) -> None:
        # Names go into URLs unquoted, so keep them to plain lowercase identifiers.
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")

    # -- internals -----------------------------------------------------------

    def _pick_os_user(self) -> pwd.struct_passwd | None:
        """The unprivileged account to run as when we are root; None when we are not root."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise RuntimeError(
            "Running as root, but there is no 'postgres' or 'nobody' user to run PostgreSQL as"
        )

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as the unprivileged user when we are root."""
        command = [str(self.bin_dir / tool), *args]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            env["HOME"] = self._run_as.pw_dir
            runuser = shutil.which("runuser")
            if runuser:
                command = [runuser, "-u", self._run_as.pw_name, "--", *command]
            else:
                # No util-linux: let Python drop privileges in the child instead.
                kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            # A cwd the server user can enter, or initdb warns and pg_ctl may fail.
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=120,
            **kwargs,
        )

    def _init_cluster(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            os.chown(self.base_dir, self._run_as.pw_uid, self._run_as.pw_gid)
            self.base_dir.chmod(0o700)
            self._check_reachable(self.base_dir, self._run_as)
        result = self._pg(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--auth=trust",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",  # a test cluster does not need to survive a power cut
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")

    @staticmethod
    def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
        """Fail clearly if ``user`` cannot traverse the directories above ``path``."""
        for parent in path.parents:
            st = parent.stat()
            if st.st_uid == user.pw_uid:
                bit = stat.S_IXUSR
            elif st.st_gid == user.pw_gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                raise RuntimeError(
                    f"PostgreSQL runs as {user.pw_name!r}, which cannot enter {parent} (mode "
                    f"{stat.filemode(st.st_mode)}); use a base directory under a world-searchable path "
                    "such as /tmp (check TMPDIR)."
                )

    def _write_settings(self) -> None:
        """(Re)write our settings into ``dunning-tests.conf``, included from postgresql.conf."""
        # Unix socket next to the data, not /var/run/postgresql (may not exist or
        # not be ours); disabled if the path would exceed sun_path's 107 bytes.
        socket_path = self.base_dir / f".s.PGSQL.{self.port}"
        socket_dir = str(self.base_dir) if len(os.fsencode(socket_path)) <= 107 else ""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": socket_dir,
            # Speed over durability: a test cluster is thrown away.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        body = "".join(
            f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items()
        )
        ours = self.data_dir / "dunning-tests.conf"
        ours.write_text("# Written by tests.support.servers.PostgresServer at every start\n" + body)
        main_conf = self.data_dir / "postgresql.conf"
        include = f"include '{ours.name}'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as fh:
                fh.write("\n" + include)
        if self._run_as is not None:
            os.chown(ours, self._run_as.pw_uid, self._run_as.pw_gid)


# ---------------------------------------------------------------------------
# SMTP
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message the SMTP server accepted, as the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes = field(repr=False)

    def __getitem__(self, header: str) -> Any:
        """Header shortcut: ``mail["Subject"]``."""
        return self.message[header]


class _RecordingHandler:
    """aiosmtpd handler: records accepted mail and applies the configured faults."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self._server._take_fault("rcpt")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay, accept_first = self._server._delay, self._server._delay_after_accept
        # asyncio.sleep yields, so other sessions keep being served meanwhile. If
        # the client hangs up during the sleep, aiosmtpd cancels this coroutine:
        # before acceptance that drops the message, after it the message stays.
        if delay > 0 and not accept_first:
            await asyncio.sleep(delay)
        refusal = self._server._take_fault("data")
        if refusal:
            return refusal
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        self._server._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=parsed,
                raw=raw,
            )
        )
        if delay > 0 and accept_first:
            await asyncio.sleep(delay)
        return "250 2.0.0 Message accepted for delivery"


_REFUSAL_TEXT = {4: "4.3.0 Temporary failure, try again later", 5: "5.7.1 Message refused"}


class SmtpServer:
    """A real SMTP server (aiosmtpd, in a background thread) on 127.0.0.1 and a free port.

    Records every accepted message in order. Fault switches make it refuse or
    stall like real servers do; refusals happen at ``DATA`` by default (one
    per message: ``smtplib`` raises ``SMTPDataError``) or at ``RCPT``
    (``at="rcpt"``: ``SMTPRecipientsRefused`` when all recipients are refused).
    """

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self._cond = threading.Condition()
        self._messages: list[ReceivedMail] = []
        self._fail_remaining = 0
        self._fail_code = 451
        self._fail_text: str | None = None
        self._fail_at: Literal["rcpt", "data"] = "data"
        self._refuse_code: int | None = None
        self._refuse_at: Literal["rcpt", "data"] = "data"
        self._delay = 0.0
        self._delay_after_accept = False
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = Controller(
            _RecordingHandler(self),
            hostname=self.host,
            port=self.port,
            # A fixed name: the default getfqdn() can stall on hosts with slow DNS.
            server_hostname="smtp.test",
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpServer:
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
        return (
            f"SmtpServer({self.url}, running={self._controller is not None}, messages={len(self.messages)})"
        )

    # -- received mail -------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of the accepted messages, oldest first."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages were accepted; return them all.

        Raises ``TimeoutError`` naming what did arrive, which is what a failing
        test wants to see.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    subjects = [str(m.message["Subject"]) for m in self._messages]
                    raise TimeoutError(
                        f"expected {count} message(s) within {timeout:g} s, got {len(self._messages)}: "
                        f"{subjects}"
                    )
                self._cond.wait(remaining)
            return list(self._messages)

    def _record(self, mail: ReceivedMail) -> None:
        with self._cond:
            self._messages.append(mail)
            self._cond.notify_all()

    # -- faults --------------------------------------------------------------

    def fail_next(
        self, n: int, code: int = 451, at: Literal["rcpt", "data"] = "data", text: str | None = None
    ) -> None:
        """Refuse the next ``n`` messages (or recipients, ``at="rcpt"``) with ``code``, then accept again.

        ``text``: the reply's text after the code (default: ``4.3.0 …`` or ``5.7.1 Message refused``).
        """
        with self._cond:
            self._fail_remaining, self._fail_code, self._fail_at, self._fail_text = n, code, at, text

    def refuse_all(self, code: int = 550, at: Literal["rcpt", "data"] = "data") -> None:
        """Refuse every message (or recipient) with ``code`` until :meth:`reset_faults`."""
        with self._cond:
            self._refuse_code, self._refuse_at = code, at

    def set_delay(self, seconds: float, *, after_accept: bool = False) -> None:
        """Wait this long before answering each message's DATA (a slow or stuck server).

        By default the wait comes first, so a client that gives up has sent
        nothing. With ``after_accept=True`` the message is recorded before the
        wait: the client times out although the mail was delivered (the
        RFC 1047 duplicate-message case a retrying sender must live with).
        """
        with self._cond:
            self._delay, self._delay_after_accept = seconds, after_accept

    def reset_faults(self) -> None:
        with self._cond:
            self._fail_remaining = 0
            self._refuse_code = None
            self._delay = 0.0
            self._delay_after_accept = False

    def _take_fault(self, stage: Literal["rcpt", "data"]) -> str | None:
        """The refusal reply for this ``stage``, consuming one ``fail_next`` credit; None to accept."""
        with self._cond:
            if self._refuse_code is not None and self._refuse_at == stage:
                code = self._refuse_code
            elif self._fail_remaining > 0 and self._fail_at == stage:
                self._fail_remaining -= 1
                code = self._fail_code
                if self._fail_text is not None:
                    return f"{code} {self._fail_text}"
            else:
                return None
        return f"{code} {_REFUSAL_TEXT.get(code // 100, 'Refused')}"

"""Shared plumbing for the benchmarks: real servers, worker processes, a raw producer, bookkeeping.

Nothing here is a mock: Redis, PostgreSQL and the workers are the real
programs (:mod:`tests.support.servers`), started on 127.0.0.1 for the run and
thrown away afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.jsonl"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY_VERSION = "0.4.3"


# ---------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Where and when the figures were taken."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    rev = "unknown"
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    # The work tree may hold uncommitted changes: fingerprint the code that actually ran.
    import hashlib

    import dramatiq
    import sqlalchemy

    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return {
        "code_sha256_12": digest.hexdigest()[:12],
        "code_newest_file_utc": datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_rev": rev,
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "dramatiq": dramatiq.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def record(name: str, params: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """Append one JSON line for this run to ``benchmarks/results.jsonl`` and return it."""
    line = {"benchmark": name, "machine": machine_info(), "params": params, "results": results}
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
    print(f"\n[{name}] result appended to {RESULTS.relative_to(ROOT)}")
    return line


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Processes: CPU time and memory from /proc
# ---------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces: fields start after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime+stime of a process (plus its reaped children's if ``children``)."""
    f = _stat(pid)
    if f is None:
        return 0.0
    # fields after ')' start at index 0 == field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (scan of /proc)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat(int(entry.name))
            if f is not None:
                parent_of[int(entry.name)] = int(f[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, including children that already exited."""
    return cpu_seconds(pid, children=True) + sum(cpu_seconds(p, children=True) for p in descendants(pid))


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all processes, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


@dataclass
class Stack:
    """Redis + PostgreSQL (+ a database with the schema) for one benchmark run."""

    work: Path
    redis: Any
    pg: Any
    db_url: str
    link_secret: str = field(default_factory=lambda: uuid.uuid4().hex * 2)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for product processes (workers, scheduler)."""
        env = {
            **os.environ,
            "DUNNING_DATABASE_URL": self.db_url,
            "DUNNING_REDIS_URL": self.redis.url,
            "DUNNING_HOME": str(self.work / "home"),
            "DUNNING_LINK_SECRET": self.link_secret,
            "DUNNING_CLOCK": "system",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
        }
        env.pop("DUNNING_SMTP_URL", None)
        env.update(extra)
        return env

    def use_in_process(self) -> None:
        """Point this process's settings at the stack (before importing ``dunning.broker``/``workers``)."""
        for key, value in self.env().items():
            if key.startswith("DUNNING_"):
                os.environ[key] = value

    def postmaster_pid(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])

    def pg_cpu(self) -> float:
        return tree_cpu(self.postmaster_pid())

    def redis_cpu(self) -> float:
        return cpu_seconds(self.redis.pid) if self.redis.pid else 0.0

    def pg_set(self, **settings: str) -> None:
        """ALTER SYSTEM + reload (only settings of context sighup/user take effect)."""
        import psycopg

        with psycopg.connect(self.pg.conninfo() + " application_name=bench", autocommit=True) as conn:
            for key, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)

    def pg_show(self, *names: str) -> dict[str, str]:
        import psycopg

        with psycopg.connect(self.pg.conninfo(), autocommit=True) as conn:
            return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}  # type: ignore[index]

    def pg_version(self) -> str:
        import psycopg

        with psycopg.connect(self.pg.conninfo(), autocommit=True) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


@contextlib.contextmanager
def stack(name: str, *, durable: bool = False) -> Iterator[Stack]:
    """Start Redis and PostgreSQL, create database ``bench`` with the product's schema."""
    from tests.support.servers import PostgresServer, RedisProcess

    from dunning.store.db import make_engine
    from dunning.store.migrate import upgrade

    work = Path(tempfile.mkdtemp(prefix=f"dunning-bench-{name}-"))
    (work / "home").mkdir()
    say(f"starting Redis and PostgreSQL under {work}")
    with RedisProcess(work / "redis") as redis_proc, PostgresServer() as pg:
        url = pg.create_database("bench")
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        st = Stack(work=work, redis=redis_proc, pg=pg, db_url=url)
        if durable:
            # The test cluster runs with fsync/synchronous_commit off; production would not.
            st.pg_set(fsync="on", synchronous_commit="on", full_page_writes="on")
        say(
            f"Redis {redis_proc.url}, PostgreSQL {st.pg_version()} on port {pg.port} "
            f"({', '.join(f'{k}={v}' for k, v in st.pg_show('fsync', 'synchronous_commit', 'shared_buffers').items())})"
        )
        try:
            yield st
        finally:
            with contextlib.suppress(Exception):
                import shutil

                shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------


class Workers:
    """A Dramatiq process pool (``dunning worker`` or ``dramatiq <module>``) as a process group."""

    READY = "Worker process is ready for action"

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path, processes: int) -> None:
        self.args = [sys.executable, *args]
        self.env = env
        self.log = log
        self.processes = processes
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Workers:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        already = self._ready_count()
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while self._ready_count() - already < self.processes:
            if self.proc.poll() is not None:
                raise RuntimeError(f"workers exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {timeout}s; see {self.log}")
            time.sleep(0.05)
        return self

    def _ready_count(self) -> int:
        try:
            return self.log.read_text(errors="replace").count(self.READY)
        except FileNotFoundError:
            return 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The processes that run actors (python children of the parent with a live RSS)."""
        return [p for p in descendants(self.pid) if rss_kib(p) > 0]

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# A raw producer: pre-built Dramatiq messages pipelined onto Redis
# ---------------------------------------------------------------------------


def build_raw_messages(
    queue: str, actor: str, args_list: Sequence[tuple[Any, ...]]
) -> list[tuple[str, bytes]]:
    """Encode messages exactly as ``RedisBroker.enqueue`` would store them (``docs/producers.md`` §3)."""
    from dramatiq import Message

    now_ms = int(time.time() * 1000)
    out = []
    for args in args_list:
        rid = str(uuid.uuid4())
        msg = Message(
            queue_name=queue,
            actor_name=actor,
            args=args,
            kwargs={},
            options={"redis_message_id": rid},
            message_id=str(uuid.uuid4()),
            message_timestamp=now_ms,
        )
        out.append((rid, msg.encode()))
    return out


def push_raw(client: Any, queue: str, messages: Sequence[tuple[str, bytes]], *, chunk: int = 500) -> float:
    """HSET + RPUSH per message, pipelined in chunks; returns seconds taken."""
    started = time.perf_counter()
    for i in range(0, len(messages), chunk):
        pipe = client.pipeline(transaction=False)
        part = messages[i : i + chunk]
        pipe.hset(f"dramatiq:{queue}.msgs", mapping=dict(part))
        pipe.rpush(f"dramatiq:{queue}", *[rid for rid, _ in part])
        pipe.execute()
    return time.perf_counter() - started


def queue_backlog(client: Any, queue: str) -> int:
    """Messages enqueued and not yet acknowledged (the ``.msgs`` hash loses an entry at ack)."""
    return int(client.hlen(f"dramatiq:{queue}.msgs"))


# ---------------------------------------------------------------------------
# Waiting and rates
# ---------------------------------------------------------------------------


def wait_for_count(
    count: Callable[[], int], target: int, *, timeout: float, poll: float = 0.1, t0: float | None = None
) -> list[tuple[float, int]]:
    """Poll ``count()`` until it reaches ``target``; returns the (seconds since t0, count) curve."""
    t0 = time.perf_counter() if t0 is None else t0
    curve: list[tuple[float, int]] = []
    last_print = 0.0
    while True:
        now = time.perf_counter() - t0
        n = count()
        curve.append((now, n))
        if n >= target:
            return curve
        if now > timeout:
            raise TimeoutError(f"only {n} of {target} after {timeout:.0f}s")
        if now - last_print > 5:
            say(f"  ... {n}/{target} after {now:.1f}s")
            last_print = now
        time.sleep(poll)


def crossing(curve: list[tuple[float, int]], value: float) -> float:
    """Time at which the curve first reaches ``value`` (linear interpolation)."""
    prev_t, prev_n = 0.0, 0
    for t, n in curve:
        if n >= value:
            if n == prev_n:
                return t
            return prev_t + (t - prev_t) * (value - prev_n) / (n - prev_n)
        prev_t, prev_n = t, n
    return curve[-1][0]


def steady_rate(curve: list[tuple[float, int]], total: int, lo: float = 0.1, hi: float = 0.9) -> float:
    """Rate between ``lo`` and ``hi`` of completion: excludes the workers' idle wake-up and the tail."""
    t_lo, t_hi = crossing(curve, lo * total), crossing(curve, hi * total)
    return (hi - lo) * total / (t_hi - t_lo) if t_hi > t_lo else float("nan")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

_ZONES = (
    "UTC",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Australia/Sydney",
    "Africa/Johannesburg",
    "Pacific/Auckland",
)


def daytime_zones(at: datetime | None = None, *, margin_h: float = 2.0) -> list[str]:
    """Zones where it is comfortably outside the default quiet hours (21:00-08:00) for a while.

    Used so that the first notice of a case is due now (its send job is claimed and
    enqueued at once, the costlier path) rather than parked until morning.
    """
    at = at or datetime.now(UTC)
    out = []
    for name in _ZONES:
        local = at.astimezone(ZoneInfo(name))
        hour = local.hour + local.minute / 60
        if 8 + 0.1 <= hour <= 21 - margin_h:
            out.append(name)
    return out or ["Etc/GMT-12"]


LOCALES = ("en", "en", "fr", "de", "en-US", "fr-CA")
DECLINES = (
    ("insufficient_funds", 60),
    ("processing_error", 10),
    ("expired_card", 10),
    ("stolen_card", 5),
    ("do_not_honor", 10),
    ("authentication_required", 5),
)


def pick_decline(rng: random.Random) -> str:
    codes, weights = zip(*DECLINES, strict=True)
    return rng.choices(codes, weights)[0]


def seed_customers(db_url: str, n: int, *, seed: int = 1, zones: Sequence[str] | None = None) -> float:
    """Insert ``n`` customers with one monthly subscription and one paid invoice each; returns seconds.

    Ids: ``cus_%07d``, ``sub_%07d``, ``in_hist_%d`` (with its ``invoice.paid`` event
    ``evt_hist_%d``). Statistics are gathered at the end (``ANALYZE``).
    """
    from sqlalchemy import insert

    from dunning.store.db import make_engine
    from dunning.store.models import Customer, Invoice, ProcessedEvent, Subscription

    rng = random.Random(seed)
    zones = list(zones or daytime_zones())
    now = datetime.now(UTC)
    started = time.perf_counter()
    engine = make_engine(db_url)
    batch = 5000
    with engine.begin() as conn:
        for lo in range(0, n, batch):
            customers, subs = [], []
            for i in range(lo, min(n, lo + batch)):
                pm = rng.random() < 0.92
                customers.append(
                    {
                        "id": f"cus_{i:07d}",
                        "email": f"customer{i}@example.com",
                        "name": f"Customer {i}",
                        "locale": rng.choice(LOCALES),
                        "timezone": rng.choice(zones),
                        "pm_present": pm,
                        "pm_brand": "visa" if pm else None,
                        "pm_last4": f"{i % 10000:04d}" if pm else None,
                        "pm_exp_month": 12 if pm else None,
                        "pm_exp_year": 2030 if pm else None,
                        "updated_at": now,
                    }
                )
                subs.append(
                    {
                        "id": f"sub_{i:07d}",
                        "customer_id": f"cus_{i:07d}",
                        "plan": rng.choice(("pro", "basic", "team")),
                        "status": "active",
                        "amount_minor": rng.choice((900, 1900, 4900, 9900)),
                        # The currency the benchmarks' invoices are in: ingest refuses an invoice
                        # in another currency than its subscription's.
                        "currency": "EUR",
                        "interval": "month",
                        "interval_count": 1,
                        "current_period_end": now + timedelta(days=30),
                        "trial_end": None,
                        "cancel_at_period_end": False,
                        "access": "active",
                        "updated_at": now,
                    }
                )
            conn.execute(insert(Customer), customers)
            conn.execute(insert(Subscription), subs)
        # History, as in a database that has been in use: each customer's last invoice was
        # paid (the ingest path looks events and invoices up by key).
        for lo in range(0, n, batch):
            ids = range(lo, min(n, lo + batch))
            conn.execute(
                insert(ProcessedEvent),
                [
                    {"id": f"evt_hist_{i}", "type": "invoice.paid", "occurred_at": now, "processed_at": now}
                    for i in ids
                ],
            )
            conn.execute(
                insert(Invoice),
                [
                    {
                        "id": f"in_hist_{i}",
                        "subscription_id": f"sub_{i:07d}",
                        "amount_minor": 4900,
                        "currency": "EUR",
                        "status": "paid",
                        "paid_at": now,
                    }
                    for i in ids
                ],
            )
    if engine.dialect.name == "postgresql":
        # A billing system's database has statistics; right after a bulk load it has none
        # until autovacuum's next pass (up to a minute), and the planner, believing the
        # tables tiny, scans them whole for every lookup.
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    engine.dispose()
    return time.perf_counter() - started


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def payment_failed_envelope(
    run: str, i: int, customer: int, decline: str, amount: int = 4900
) -> dict[str, Any]:
    return {
        "id": f"evt_{run}_{i}",
        "type": "invoice.payment_failed",
        "occurred_at": iso(datetime.now(UTC)),
        "data": {
            "invoice": {
                "id": f"in_{run}_{i}",
                "subscription_id": f"sub_{customer:07d}",
                "customer_id": f"cus_{customer:07d}",
                "amount_minor": amount,
                "currency": "EUR",
            },
            "decline_code": decline,
        },
    }


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"

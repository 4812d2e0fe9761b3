"""Profiling helpers: py-spy around real worker processes, and an in-process, instrumented ingest.

py-spy comes from PyPI through ``uv run --with py-spy`` (it is not a project
dependency); when it cannot be had or cannot attach (no ptrace), the caller
falls back to the in-process breakdown alone.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import PY_SPY_VERSION, ROOT, say


def find_py_spy() -> str | None:
    """Path of a py-spy binary: on PATH, or fetched into uv's cache with ``uv run --with``."""
    found = shutil.which("py-spy")
    if found:
        return found
    uv = shutil.which("uv")
    if not uv:
        return None
    with contextlib.suppress(Exception):
        out = (
            subprocess.run(
                [
                    uv,
                    "run",
                    "--with",
                    f"py-spy=={PY_SPY_VERSION}",
                    "python",
                    "-c",
                    "import shutil; print(shutil.which('py-spy') or '')",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        if out and out[-1]:
            return out[-1]
    return None


class PySpy:
    """``py-spy record --subprocesses --gil --format raw`` on a process tree until :meth:`stop`.

    ``--gil`` samples only the thread holding each process's GIL: exactly the
    Python work that competes for the CPU (I/O waits, which release the GIL,
    are left out).
    """

    def __init__(self, binary: str, pid: int, out: Path, *, rate: int = 100) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--format",
                "raw",
                "-o",
                str(out),
                "--rate",
                str(rate),
                "--gil",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1.0)  # let it attach to every process

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


# ---------------------------------------------------------------------------
# Reading py-spy's collapsed stacks
# ---------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


@dataclass
class Stacks:
    samples: list[tuple[list[tuple[str, str]], int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.samples)


def read_stacks(path: Path, *, skip_processes: set[int] | None = None) -> Stacks:
    """Parse ``--format raw`` output into [(frames as (function, file), count)], root first."""
    stacks = Stacks()
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames: list[tuple[str, str]] = []
        pids = []
        for part in body.split(";"):
            if part.startswith("process "):
                m = re.match(r"process (\d+)", part)
                if m:
                    pids.append(int(m.group(1)))
                continue
            m = _FRAME.match(part)
            frames.append((m.group("func"), m.group("file")) if m else (part, ""))
        if skip_processes and pids and pids[-1] in skip_processes:
            continue
        stacks.samples.append((frames, int(count)))
    return stacks


# Inclusive buckets: a sample counts for the first bucket (in this order) that matches any frame.
INCLUSIVE = [
    ("Renderer.render (Jinja2 + Babel + css-inline)", lambda f, p: f == "Renderer.render"),
    ("parse_event (pydantic validation)", lambda f, p: f == "parse_event"),
    (
        "session commit (incl. the buffered executemany writes of store/unit.py)",
        lambda f, p: (
            f in ("Session.commit", "SessionTransaction.commit", "Connection.commit", "Transaction.commit")
            or ("commit" in f and "sqlalchemy generated" in p)
            or (f == "__exit__" and "store/db.py" in p)
        ),
    ),
    ("add_jobs (job INSERTs)", lambda f, p: f == "add_jobs"),
    ("write_notice (outbox row, notice context)", lambda f, p: f.startswith("write_notice")),
    ("apply_decision other (timeline, cancel retries)", lambda f, p: f == "apply_decision"),
    (
        "_payment_failed lookups, Case/Invoice INSERT, open_case",
        lambda f, p: f.startswith("_payment_failed"),
    ),
    ("apply_event (ProcessedEvent check)", lambda f, p: f == "apply_event"),
    ("_prefetch (group commit: batch lookups)", lambda f, p: f in ("_prefetch", "prefetch")),
    ("_barrier (group commit: flush, deferred work)", lambda f, p: f in ("_barrier", "barrier")),
    ("ingest_many other", lambda f, p: f == "ingest_many"),
    (
        "ingest other (session/transaction setup, pool pre-ping)",
        lambda f, p: f == "ingest" and "services/ingest.py" in p,
    ),
    ("GroupCommit hand-off (locks, events)", lambda f, p: "groupcommit.py" in p),
    ("send_jobs (Redis enqueue of the send job)", lambda f, p: f == "send_jobs"),
    ("our middleware (RunAlone lock, dead letters, retries)", lambda f, p: "dunning/middleware.py" in p),
    ("other middleware", lambda f, p: "dramatiq/middleware" in p),
    (
        "Dramatiq consumer (fetch, decode, ack)",
        lambda f, p: "dramatiq/brokers" in p or ("dramatiq/worker.py" in p and f.startswith("_Consumer")),
    ),
    ("Dramatiq worker thread (dispatch, logging)", lambda f, p: "dramatiq/" in p),
]

_TAIL = INCLUSIVE[-5:]  # middleware and Dramatiq buckets, shared by every actor

EMAIL_BUCKETS = [
    (
        "batched start (begin_all: jobs UPDATE, lock + load, send facts, decide, commit)",
        lambda f, p: f in ("begin_all", "_begin_many", "_begin_batch"),
    ),
    (
        "sending mark (pending -> sending, group-committed)",
        lambda f, p: f.endswith("commit_point") or f in ("mark_sending", "_mark"),
    ),
    ("outcome (settle: sent, job finished; group-committed)", lambda f, p: f.endswith("settle")),
    ("wire bytes (wire_message)", lambda f, p: f == "wire_message"),
    ("build_message (MIME message from the outbox row)", lambda f, p: f == "build_message"),
    (
        "SMTP conversation (smtplib, body serialisation)",
        lambda f, p: "smtplib" in p or f in ("_transmit", "_send_once"),
    ),
    ("SmtpSender.send other (tenacity, breaker)", lambda f, p: "mail/smtp.py" in p),
    ("metrics (telemetry)", lambda f, p: "dunning/telemetry.py" in p),
    ("job start alone", lambda f, p: f == "start" and "engine/jobs.py" in p),
    ("run_batch / run_job other", lambda f, p: f in ("run_batch", "run_job", "_run") and "runner.py" in p),
    ("send_jobs", lambda f, p: f == "send_jobs"),
    *_TAIL,
]

# Leaf attribution: which library's code was on the CPU.
LEAF_LIBS = [
    ("sqlalchemy", "sqlalchemy/"),
    ("psycopg", "psycopg"),
    ("jinja2/markupsafe", "jinja2/"),
    ("babel", "babel/"),
    ("css_inline", "css_inline"),
    ("pydantic", "pydantic"),
    ("redis-py", "redis/"),
    ("dramatiq", "dramatiq/"),
    ("dunning", "dunning/"),
    ("logging", "logging/"),
    ("json", "json/"),
    ("email (stdlib)", "/email/"),
    ("smtplib/socket", "smtplib"),
    ("threading/queue", "threading.py"),
]


def summarise(stacks: Stacks, buckets: list[Any] | None = None) -> dict[str, Any]:
    total = stacks.total or 1
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for frames, n in stacks.samples:
        label = "outside any actor (idle loops, heartbeats, GC)"
        for name, match in buckets or INCLUSIVE:
            if any(match(f, p) for f, p in frames):
                label = name
                break
        inclusive[label] += n
        leaf_file = frames[-1][1] if frames else ""
        lib = next((name for name, pat in LEAF_LIBS if pat in leaf_file), "stdlib/other")
        leaves[lib] += n
        seen = set()
        for f, p in frames:
            key = f"{f} ({Path(p).name})"
            if key not in seen:
                seen.add(key)
                functions[key] += n
    return {
        "samples": stacks.total,
        "inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common()},
        "leaf_library_pct": {k: round(100 * v / total, 1) for k, v in leaves.most_common()},
        "top_functions_inclusive_pct": {k: round(100 * v / total, 1) for k, v in functions.most_common(40)},
    }


def print_summary(title: str, summary: dict[str, Any], *, top: int = 25) -> None:
    say(f"{title}: {summary['samples']} samples")
    print("  where the CPU went (each sample counted once, first matching bucket):")
    for k, v in summary["inclusive_pct"].items():
        print(f"    {v:5.1f}%  {k}")
    print("  leaf library (code on the CPU):")
    for k, v in summary["leaf_library_pct"].items():
        print(f"    {v:5.1f}%  {k}")
    print("  functions, inclusive:")
    for k, v in list(summary["top_functions_inclusive_pct"].items())[:top]:
        print(f"    {v:5.1f}%  {k}")


def say_fallback(reason: str) -> None:
    say(f"py-spy unavailable ({reason}); relying on the in-process breakdown")


if __name__ == "__main__":
    # Re-read a kept profile: uv run python -m benchmarks._profile benchmarks/results/ingest-pyspy.txt [email]
    import sys

    kept = Path(sys.argv[1])
    chosen = EMAIL_BUCKETS if len(sys.argv) > 2 and sys.argv[2] == "email" else INCLUSIVE
    print_summary(str(kept), summarise(read_stacks(kept), chosen), top=40)

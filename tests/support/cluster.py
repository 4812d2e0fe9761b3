"""Real worker processes for crash and fault tests: start, SIGKILL a child, restart."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class WorkerGroup:
    """``dunning worker`` as a supervised process group (what compose's restart policy does)."""

    def __init__(self, env: dict[str, str], log: Path, *, processes: int = 2, threads: int = 4) -> None:
        self.env = env
        self.log = log
        self.args = ["worker", "--processes", str(processes), "--threads", str(threads)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.restarts = 0
        self.started_at = 0.0

    def start(self) -> None:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dunning", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    def up_for(self) -> float:
        """Seconds since the pool was (re)started, 0 if it is down."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return time.monotonic() - self.started_at

    def worker_pids(self) -> list[int]:
        """The worker processes (children of dramatiq's parent, itself our child or grandchild)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids = _children(self.proc.pid)
        # ``dunning worker`` runs dramatiq's main in-process: its children are the workers.
        return [p for p in pids if Path(f"/proc/{p}").exists()]

    def kill_one(self, rng: random.Random) -> bool:
        """SIGKILL one worker process; False if none was running."""
        pids = self.worker_pids()
        if not pids:
            return False
        try:
            os.kill(rng.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills += 1
        return True

    def ensure_running(self) -> None:
        """Restart the group if it went down (dramatiq stops the pool when one worker dies)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.restarts += 1
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= 1:
                return
            time.sleep(0.05)
        raise AssertionError(f"workers did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def kill_pool(group: WorkerGroup) -> bool:
    """SIGKILL the whole pool at once (Dramatiq's parent and every worker process); False if it was down.

    What a message that crashes its worker does, wherever it runs, without the wait for
    Dramatiq's parent to notice: a worker process killed while its siblings still boot
    leaves the parent waiting about 30 s for them, and a worker killed alone lets its
    siblings finish their runs during the graceful shutdown. Counts as one kill
    (``group.kills``); the supervisor's ``ensure_running`` counts the restart.
    """
    proc = group.proc
    if proc is None or proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    proc.wait(10)
    group.kills += 1
    return True

"""Real worker processes for crash and fault tests: start, SIGKILL a child, restart."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
        self._log_offset = 0
        self._booted_at: float | None = None

    def start(self) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self._booted_at = None
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

    def booted_for(self) -> float:
        """Seconds since Dramatiq's parent finished booting the pool (seen in its log), 0 until then.

        Until then the parent waits for each worker process's "booted" event, and a worker
        SIGKILLed while it sets that event (a multiprocessing lock held by a dead process)
        leaves the parent blocked for good with no worker left: a Dramatiq limitation that
        no supervisor sees, since the parent lives on. A worker killed earlier in its boot
        costs a 30 s wait (``--worker-fork-timeout``). Kills for the crash test wait for this.
        """
        if self.up_for() == 0.0:
            return 0.0
        if self._booted_at is None:
            with self.log.open("rb") as handle:
                handle.seek(self._log_offset)
                if b"is booting up." not in handle.read():
                    return 0.0
            self._booted_at = time.monotonic()
        return time.monotonic() - self._booted_at

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

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the whole pool (Dramatiq's parent and every worker) for the block, SIGCONT after.

        Nothing the pool does can race what the block reads and does: a test that must know
        exactly which messages are still in Redis when it wipes Redis snapshots them frozen.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise AssertionError("the worker pool is not running")
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(proc.pid, signal.SIGCONT)

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

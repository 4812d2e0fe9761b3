"""The install's shared embedded Redis: started once, found by every process, stopped cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dunning.devtools.embedded_redis import ensure_embedded_redis, find_redis_server, stop_embedded_redis

pytestmark = pytest.mark.integration

# Prints "<url> <run_id> <pid>" of the embedded Redis for the home given as argv[1].
_CHILD = """
import sys
from pathlib import Path
import redis
from dunning.devtools.embedded_redis import ensure_embedded_redis
url = ensure_embedded_redis(Path(sys.argv[1]))
info = redis.Redis.from_url(url).info("server")
print(url, info["run_id"], info["process_id"])
"""


def _identity(url: str) -> tuple[str, int]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
        return info["run_id"], info["process_id"]
    finally:
        client.close()


def _ensure_in_subprocess(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen[str]) -> tuple[str, str, int]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    url, run_id, pid = out.split()
    return url, run_id, int(pid)


def _servers_mentioning(marker: str) -> list[int]:
    """Pids of live redis-server processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmdline and marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh install home; whatever Redis a test starts there is stopped afterwards."""
    path = tmp_path / "home"
    yield path
    stop_embedded_redis(path)


def test_find_redis_server_returns_an_executable() -> None:
    binary = find_redis_server()
    assert binary.name == "redis-server"
    assert os.access(binary, os.X_OK)


def test_starts_once_and_is_reused_across_calls_and_processes(home: Path) -> None:
    url = ensure_embedded_redis(home)
    socket_path = home.resolve() / "redis" / "redis.sock"
    assert url == f"unix://{socket_path}"
    assert socket_path.is_socket()
    run_id, pid = _identity(url)

    assert ensure_embedded_redis(home) == url
    assert _identity(url) == (run_id, pid)

    child_url, child_run_id, child_pid = _result(_ensure_in_subprocess(home))
    assert (child_url, child_run_id, child_pid) == (url, run_id, pid)
    assert _servers_mentioning(str(socket_path)) == [pid]


def test_concurrent_first_use_starts_exactly_one_server(home: Path) -> None:
    children = [_ensure_in_subprocess(home) for _ in range(6)]
    results = {_result(child) for child in children}
    assert len(results) == 1, results
    [(url, _run_id, pid)] = results
    assert _servers_mentioning(url.removeprefix("unix://")) == [pid]


def test_stop_shuts_it_down_and_reports_whether_it_ran(home: Path) -> None:
    assert stop_embedded_redis(home) is False  # never started
    url = ensure_embedded_redis(home)
    _run_id, pid = _identity(url)

    assert stop_embedded_redis(home) is True
    assert _servers_mentioning(url.removeprefix("unix://")) == []
    assert not Path(f"/proc/{pid}").exists() or b"redis" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    client = redis.Redis.from_url(url)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()
    assert stop_embedded_redis(home) is False


def test_queued_data_survives_stop_and_start(home: Path) -> None:
    url = ensure_embedded_redis(home)
    first_run_id, _ = _identity(url)
    client = redis.Redis.from_url(url)
    client.rpush("dramatiq:default", "message-1", "message-2")
    client.close()

    assert stop_embedded_redis(home) is True
    url = ensure_embedded_redis(home)
    assert _identity(url)[0] != first_run_id  # really a new server process
    client = redis.Redis.from_url(url)
    try:
        assert client.lrange("dramatiq:default", 0, -1) == [b"message-1", b"message-2"]
    finally:
        client.close()


def test_stale_pidfile_does_not_block_start(home: Path) -> None:
    redis_dir = home / "redis"
    redis_dir.mkdir(parents=True)
    # Our own pid: alive, but not a Redis server (as after a reboot reused the pid).
    (redis_dir / "redis.pid").write_text(f"{os.getpid()}\n")
    url = ensure_embedded_redis(home)
    _run_id, pid = _identity(url)
    assert pid != os.getpid()


def test_long_home_path_falls_back_to_tcp_and_is_shared(tmp_path: Path) -> None:
    home = tmp_path / ("very-long-directory-name-" * 5) / "home"
    assert len(str(home / "redis" / "redis.sock")) > 107
    try:
        url = ensure_embedded_redis(home)
        port = int((home / "redis" / "port").read_text())
        assert url == f"redis://127.0.0.1:{port}/0"
        run_id, pid = _identity(url)
        child_url, child_run_id, child_pid = _result(_ensure_in_subprocess(home))
        assert (child_url, child_run_id, child_pid) == (url, run_id, pid)
        # A restart keeps the port (it is still free), so clients holding the URL reconnect.
        assert stop_embedded_redis(home) is True
        assert ensure_embedded_redis(home) == url
        assert _identity(url)[0] != run_id
    finally:
        stop_embedded_redis(home)
    assert stop_embedded_redis(home) is False

"""Importing any module of the product starts nothing: no broker, no server, no connection."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, socket, subprocess, sys
    import dramatiq

    def refuse(*args, **kwargs):
        raise AssertionError("a connection or a process was started at import")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    subprocess.Popen.__init__ = refuse
    import dunning

    names = []
    for info in pkgutil.walk_packages(dunning.__path__, "dunning."):
        if ".migrations" in info.name or info.name == "dunning.__main__":
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    # No module set Dramatiq's global broker (get_broker() would build a default one).
    assert dramatiq.broker.global_broker is None, "a module set the global broker"
    print(len(names))
    """
)


def test_importing_every_module_starts_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 60  # every module was imported, not a few

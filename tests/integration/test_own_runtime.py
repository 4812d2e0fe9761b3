"""A command run in-process gets its own runtime without disturbing the other threads'."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dunning.runtime import build_runtime, get_runtime, own_runtime, set_runtime
from dunning.settings import load_settings


def test_own_runtime_is_built_from_the_environment_for_this_thread_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = build_runtime(load_settings({"DUNNING_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}))
    set_runtime(shared)
    seen_by_other_thread: list[object] = []
    try:
        monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'command.db'}")
        monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
        with own_runtime():
            mine = get_runtime()
            assert mine is not shared
            assert mine.settings.database_url.endswith("command.db")
            assert get_runtime() is mine  # built once for the scope

            other = threading.Thread(target=lambda: seen_by_other_thread.append(get_runtime()))
            other.start()
            other.join()
        assert seen_by_other_thread == [shared]
        assert get_runtime() is shared  # the scope ended: the process-wide one again
        mine.close()
    finally:
        set_runtime(None)
        shared.close()

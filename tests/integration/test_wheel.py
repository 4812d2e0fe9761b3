"""The wheel installs one package, ``dunning``: actors as ``dunning.workers``, no generic top-level ``workers``."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_only_the_dunning_package(tmp_path: Path) -> None:
    # `uv run` tells its children where it is (UV); else it is on PATH (.ci/run installs it).
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv is not None, "uv not found: run the suite with `uv run pytest`"
    subprocess.run([uv, "build", "--wheel", "-o", str(tmp_path), "-q"], cwd=REPO, check=True, timeout=300)
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"dunning"}, top_level
    assert {"dunning/workers/__init__.py", "dunning/workers/ingest.py", "dunning/workers/jobs.py"} <= set(
        names
    )
    assert any(n.startswith("dunning/_templates/email/failed_payments/") for n in names)
    # The dashboard's browser code is served from the package: no CDN at run time.
    assert {
        "dunning/http/static/vendor/chart.umd.min.js",
        "dunning/http/static/vendor/chart.js-LICENSE.md",
        "dunning/http/static/dashboard.js",
        "dunning/http/static/dashboard.css",
        "dunning/http/templates/dashboard.html",
    } <= set(names)

"""The shipped Prometheus rules and Grafana dashboard are well-formed.

That they name only exported metrics is checked against the real collector in
``tests/integration/test_metrics_export.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus/alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_grafana_dashboard_has_a_query_on_every_panel() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dunning.json").read_text())
    assert dashboard["uid"] == "dunning-ops"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all("dunning_" in t["expr"] for t in panel["targets"]), panel["title"]

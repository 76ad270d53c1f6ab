"""Cron end to end: a real ``mags server``, the real CLI and SDK, a real job every minute."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mags import Mags, MagsError
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")

# the next minute boundary is at most 60 s away, then the job starts and runs
RUN_WAIT_S = 75.0


def test_cron_runs_a_real_job_and_the_cli_and_sdk_see_it(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "data", tmp_path / "home", free_port(), "namespaces").start()
    m = Mags(api_token=srv.admin_token, api_url=srv.url)
    try:
        r = srv.cli("cron", "add", "-n", "tick", "-s", "* * * * *", "echo cron-says-$((6*7))")
        assert r.returncode == 0, r.stderr
        assert "Created cron job" in r.stdout and "next run:" in r.stdout

        # the SDK surface while we wait for the minute to turn
        made = m.cron_create("sdk-cron", "0 12 * * *", "echo noon", environment={"A": "1"}, workspace_id="ws")
        assert made["enabled"] is True and made["workspace_id"] == "ws" and made["environment_keys"] == ["A"]
        assert made["next_run_at"].endswith("T12:00:00.000Z")
        assert {c["name"] for c in m.cron_list()["cron_jobs"]} == {"tick", "sdk-cron"}
        assert m.cron_get(made["id"])["runs"] == []
        off = m.cron_update("sdk-cron", enabled=False)  # by name, as the CLI allows
        assert off["enabled"] is False and off["next_run_at"] is None
        moved = m.cron_update(made["id"], enabled=True, cron_expression="30 6 * * *", timezone="Asia/Kolkata")
        assert moved["next_run_at"].endswith("T01:00:00.000Z")  # 06:30 IST
        with pytest.raises(MagsError) as err:
            m.cron_update(made["id"], cron_expression="61 * * * *")
        assert err.value.status_code == 400 and "minute must be 0-59" in str(err.value)
        assert m.cron_delete(made["id"])["success"] is True
        with pytest.raises(MagsError) as err:
            m.cron_get(made["id"])
        assert err.value.status_code == 404

        deadline = time.monotonic() + RUN_WAIT_S
        tick = m.cron_get("tick")
        while (
            tick["last_status"] not in ("completed", "error", "failed_to_start")
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
            tick = m.cron_get("tick")
        assert tick["last_status"] == "completed", (tick, srv.log())
        assert tick["last_exit_code"] == 0 and tick["runs"][0]["status"] == "started"
        job_id = tick["last_job_id"]

        r = srv.cli("logs", job_id)
        assert r.returncode == 0, r.stderr
        assert "cron-says-42" in r.stdout
        r = srv.cli("cron", "list")
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if " tick " in f" {line} ")
        assert "* * * * *" in row and "completed" in row

        r = srv.cli("cron", "disable", "tick")
        assert r.returncode == 0, r.stderr
        assert m.cron_get("tick")["enabled"] is False
        r = srv.cli("cron", "remove", tick["id"])
        assert r.returncode == 0 and "Removed cron job" in r.stdout
        assert m.cron_list()["cron_jobs"] == []
    finally:
        m.close()
        srv.stop()

"""The quota levels nginx puts in write answers, and the map file ingestd keeps for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ingestd.store.quota import QuotaMap, level


def test_levels_start_at_the_warning_and_move_in_steps_of_five():
    assert level(0.79, 100, 0.8) is None
    assert level(0.8, 100, 0.8) == "80% of 100 MiB used"
    assert level(0.849, 100, 0.8) == "80% of 100 MiB used"
    assert level(0.85, 0.5, 0.8) == "85% of 0.5 MiB used"
    over = level(1.234, 100, 0.8)
    assert over == "120% of 100 MiB used: over quota, new posts are held until the quota is raised"


def test_the_map_is_rewritten_only_when_a_level_changes_and_nginx_is_told(tmp_path):
    sleeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: print('HUP', flush=True))\n"
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    pid_file = tmp_path / "nginx.pid"
    pid_file.write_text(f"{sleeper.pid}\n")
    quota_map = QuotaMap(tmp_path / "quota.map", pid_file)
    try:
        assert quota_map.update({"a": None})  # first time: the file is created (empty)
        assert quota_map.update({"b": "85% of 1 MiB used", "a": None})
        assert not quota_map.update({"b": "85% of 1 MiB used", "c": None})
        lines = (tmp_path / "quota.map").read_text().splitlines()
        assert lines[1:] == ['b "85% of 1 MiB used";']
        assert quota_map.update({"b": None})
        assert (tmp_path / "quota.map").read_text().splitlines()[1:] == []
        assert sleeper.stdout.readline().strip() == "HUP"
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait()


def test_without_a_signalable_nginx_the_file_is_still_written(tmp_path):
    quota_map = QuotaMap(tmp_path / "quota.map", tmp_path / "missing.pid")
    assert quota_map.update({"x": "90% of 1 MiB used"})
    assert 'x "90% of 1 MiB used";' in (tmp_path / "quota.map").read_text()

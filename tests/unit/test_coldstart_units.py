"""The cold start's pure parts, without infrastructure: the site cache's trust rules and expiry, the plan of a
cold burst, and the Ctrl-C message."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from clustrix_futures import config
from clustrix_futures.engine.interruption import interrupted_message
from clustrix_futures.engine.sitecache import EXPIRY_ENV, SiteCache, cache_dir, site_key
from clustrix_futures.engine.submission import plan_burst
from clustrix_futures.mapping.sizing import MAX_TASKS_PER_ELEMENT, burst_per_element


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SiteCache:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(EXPIRY_ENV, raising=False)
    settings = config.resolve(None, "slurm", None, {"work_dir": str(tmp_path / "runs")})
    return SiteCache(site_key(settings, "python3"))


def test_saved_facts_load_back_from_a_private_file(cache):
    cache.save({"max_array": 7})
    assert cache.load() == {"max_array": 7}
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700
    assert [p.name for p in cache_dir().iterdir()] == [cache.path.name]  # no temporary file left


@pytest.mark.parametrize("damage", ["file mode", "directory mode", "symlink", "other key", "future", "expired",
                                    "garbage", "off"])
def test_an_entry_is_not_trusted_unless_private_fresh_and_for_this_key(cache, damage, tmp_path, monkeypatch):
    cache.save({"max_array": 7})
    document = json.loads(cache.path.read_text())
    if damage == "file mode":
        cache.path.chmod(0o640)
    elif damage == "directory mode":
        cache_dir().chmod(0o755)
    elif damage == "symlink":
        elsewhere = tmp_path / "planted.json"
        os.replace(cache.path, elsewhere)
        cache.path.symlink_to(elsewhere)
    elif damage in ("other key", "future", "expired"):
        document["key"] = {**document["key"], "host": "elsewhere"} if damage == "other key" else document["key"]
        document["saved"] += {"other key": 0, "future": 3600, "expired": -3600}[damage]
        cache.path.write_text(json.dumps(document))
    elif damage == "garbage":
        cache.path.write_text("{not json")
    else:
        monkeypatch.setenv(EXPIRY_ENV, "0")
    assert cache.load() is None


def test_nothing_is_written_through_a_directory_that_is_not_private(cache):
    cache_dir().mkdir(parents=True)
    cache_dir().chmod(0o777)
    cache.save({"max_array": 7})
    assert not cache.path.exists()


def test_forget_drops_the_entry_and_keys_differ_by_site(cache, tmp_path):
    cache.save({"max_array": 7})
    cache.forget()
    assert cache.load() is None
    cache.forget()  # twice is no error
    other = config.resolve(None, "slurm", None, {"work_dir": str(tmp_path / "runs"), "host": "login"})
    assert site_key(other, "python3") != cache.key


def test_a_cold_burst_is_the_first_task_alone_then_the_rest_over_the_other_slots():
    sizes = [[len(e) for e in a] for a in plan_burst(list(range(200)), 16, None)]
    assert sizes == [[1, 14, 14, 14, 14] + [13] * 11]
    assert plan_burst([5, 6], 1, None) == [[[5], [6]]]  # max_workers=1: the second waits in its own element
    assert plan_burst([5], 16, None) == [[[5]]] and plan_burst([], 16, None) == []
    assert plan_burst(list(range(5)), 16, 2) == [[[0], [1]], [[2], [3]], [[4]]]  # split to MaxArraySize
    assert sorted(t for a in plan_burst(list(range(1000)), 4, 100) for e in a for t in e) == list(range(1000))
    assert burst_per_element(10**9, 16) == MAX_TASKS_PER_ELEMENT


def test_the_ctrl_c_message_names_the_run_and_the_commands():
    text = interrupted_message("/runs/r 1", 4, 2, {"host": "login.example"})
    assert "4 queued elements cancelled; 2 running elements keep running (Ctrl-C again cancels them too)" in text
    assert "clustrix-futures cancel --host login.example '/runs/r 1'" in text
    assert "ClusterPoolExecutor.attach('/runs/r 1')" in text
    assert "1 queued element cancelled; no element was running" in interrupted_message("/r", 1, 0, {})

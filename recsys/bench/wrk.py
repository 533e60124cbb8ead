"""Closed-loop HTTP load with wrk: N connections, each sending its next request as soon as the last one
is answered, for a fixed time. Where the open loop (loadgen.py) asks "how slow at this rate", this asks
"how much can it answer, and how slow is it then".

wrk (C, one epoll thread) costs a fraction of what a Python generator would take from the 2 cores it
shares with the server. Its Lua script rotates through a file of distinct request paths, so with the
response cache cleared before a run every request is a miss, counts answers by status (503 is load
shed by the server, not a failure of the client) and prints the result as one JSON line from `done()`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

JSON_MARK = "WRK_JSON "

# Each wrk thread has its own Lua state: thread i of n takes every n-th path, from args[1] (the paths
# file); args[2] is n. `done()` runs in yet another state and reads the threads' counters.
LUA_SCRIPT = r"""
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads, i = tonumber(args[2]), 0
  reqs = {}
  for line in io.lines(args[1]) do
    if line ~= "" then
      if i % nthreads == id then reqs[#reqs + 1] = wrk.format("GET", line) end
      i = i + 1
    end
  end
  paths, cursor, sent, ok, non2xx, shed, degraded = #reqs, 0, 0, 0, 0, 0, 0
end

function request()
  cursor = cursor % paths + 1
  sent = sent + 1
  return reqs[cursor]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if body and body:find('"degraded":[', 1, true) and not body:find('"degraded":[]', 1, true) then
      degraded = degraded + 1
    end
  else
    non2xx = non2xx + 1
    if status == 503 then shed = shed + 1 end
  end
end

function done(summary, latency, requests)
  local c = {sent = 0, ok = 0, non2xx = 0, shed = 0, degraded = 0, paths = 0}
  for _, thread in ipairs(threads) do
    for k, v in pairs(c) do c[k] = v + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%.0f,"requests":%.0f,"sent":%.0f,"ok":%.0f,"non2xx":%.0f,"shed":%.0f,'
    .. '"degraded":%.0f,"paths":%.0f,"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,'
    .. '"timeout":%.0f},"latency_us":{"p50":%.0f,"p95":%.0f,"p99":%.0f,"max":%.0f}}\n',
    summary.duration, summary.requests, c.sent, c.ok, c.non2xx, c.shed, c.degraded, c.paths,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int        # answered within the run, any status
    ok: int              # 2xx
    non2xx: int          # every other status, 503 included
    shed: int            # 503: the server refused the load
    degraded: int        # 2xx that name a missing stage or source in `degraded`
    socket_errors: int   # connect, read, write and timeout errors (no answer at all)
    sent: int
    paths: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        """Throughput: successful answers per second (a fast 503 is not throughput)."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def shed_rate(self) -> float:
        return self.shed / self.requests if self.requests else 0.0

    @property
    def wrapped(self) -> bool:
        """More requests than paths: some were repeats, possibly answered from the response cache."""
        return self.sent > self.paths


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("the closed-loop HTTP benchmark needs wrk: apt-get install wrk")
    return path


def parse(stdout: str, connections: int) -> WrkResult:
    """The JSON line the script's done() printed (wrk's own summary around it is ignored)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(JSON_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")
    d = json.loads(line[len(JSON_MARK):])
    e, lat = d["errors"], d["latency_us"]
    return WrkResult(connections, d["duration_us"] / 1e6, int(d["requests"]), int(d["ok"]), int(d["non2xx"]),
                     int(d["shed"]), int(d["degraded"]), int(e["connect"] + e["read"] + e["write"] + e["timeout"]),
                     int(d["sent"]), int(d["paths"]), lat["p50"] / 1000, lat["p95"] / 1000, lat["p99"] / 1000)


def run_wrk(base_url: str, paths: list[str], connections: int, seconds: float, threads: int = 1,
            timeout_s: float = 5.0) -> WrkResult:
    """`connections` connections for `seconds`, rotating through `paths`; a request unanswered after
    `timeout_s` is a socket error (timeout)."""
    wrk = require_wrk()
    threads = max(1, min(threads, connections, len(paths)))
    with tempfile.TemporaryDirectory(prefix="recsys-wrk-") as tmp:
        script, path_file = Path(tmp) / "rotate.lua", Path(tmp) / "paths.txt"
        script.write_text(LUA_SCRIPT)
        path_file.write_text("\n".join(paths) + "\n")
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), base_url, "--", str(path_file),
               str(threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    return parse(done.stdout, connections)

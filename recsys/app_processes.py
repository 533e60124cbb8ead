"""The long-running recsys processes (the feature consumer) started in the background by the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from recsys.services.process import read_pid, spawn, terminate


def _pid_file(cfg, name: str) -> Path:
    return Path(cfg.state_dir) / "run" / f"app-{name}.pid"


def start(cfg, name: str, args: list[str], overrides: list[str]) -> int:
    """Start `python -m recsys.cli <args> <overrides>` unless it already runs; return its pid."""
    pid_file = _pid_file(cfg, name)
    pid = read_pid(pid_file)
    if pid is not None:
        return pid
    log_file = Path(cfg.state_dir) / "logs" / f"{name}.log"
    return spawn([sys.executable, "-m", "recsys.cli", *args, *overrides], pid_file, log_file)


def running(cfg) -> dict[str, int]:
    run = Path(cfg.state_dir) / "run"
    found = {p.stem.removeprefix("app-"): read_pid(p) for p in run.glob("app-*.pid")} if run.exists() else {}
    return {name: pid for name, pid in found.items() if pid is not None}


def stop_all(cfg) -> list[str]:
    run = Path(cfg.state_dir) / "run"
    stopped = []
    for pid_file in sorted(run.glob("app-*.pid")) if run.exists() else []:
        if terminate(pid_file):
            stopped.append(pid_file.stem.removeprefix("app-"))
    return stopped

"""docs/benchmarks.json (figure name -> value, unit, command, date, machine) and the Markdown made from it."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

from recsys.config import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB, {platform.system()} {platform.release()}"


def record(figures: dict[str, tuple[float, str]], command: str, docs: Path = DOCS, where: str | None = None,
           drop_prefixes: list[str] | tuple[str, ...] = ()) -> None:
    """Merge figures {name: (value, unit)} into benchmarks.json and rewrite benchmarks.md.
    `where` names the machine when it is not this one (a lent GPU machine). A figure under one of
    `drop_prefixes` that `figures` does not have is removed: the command owns those names, and one it no
    longer measures would otherwise keep an old number in the docs."""
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "benchmarks.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data = {k: v for k, v in data.items() if k in figures or not k.startswith(tuple(drop_prefixes))}
    today, where = date.today().isoformat(), where or machine()
    for name, (value, unit) in figures.items():
        data[name] = {"value": round(float(value), 4), "unit": unit, "command": command, "date": today,
                      "machine": where}
    path.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    write_markdown(data, docs / "benchmarks.md")


def write_markdown(data: dict, path: Path) -> None:
    sections = sorted(path.parent.glob("benchmarks-*.md"))  # hand-written notes, generated tables
    lines = ["# Benchmarks", "",
             "Generated from `docs/benchmarks.json` by the commands listed; rerun them to reproduce. "
             "Every figure names the machine and date it was measured on.", ""]
    groups: dict[str, list[str]] = {}
    for name in sorted(data):
        groups.setdefault(name.split(".")[0], []).append(name)
    for group, names in groups.items():
        lines += [f"## {group}", "", "| figure | value | unit | command | date | machine |", "| --- | ---: | --- | --- | --- | --- |"]
        for name in names:
            f = data[name]
            lines.append(f"| `{name}` | {f['value']:g} | {f['unit']} | `{f['command']}` | {f['date']} | {f['machine']} |")
        lines.append("")
    for section in sections:
        lines += [section.read_text().rstrip(), ""]
    path.write_text("\n".join(lines))

"""Release gates: the checks a model version must pass before it goes live or enters a canary.

Each kind has its file in `conf/gates/` (two_tower, als, ranker, content): thresholds on the metrics the
version was registered with (its time-holdout report) — an absolute floor, at least the live version's
value minus a tolerance, above another metric (a ranker above the retrieval order it re-ranks) — and
a p95 latency of the candidate scoring requests in process (recsys/release/latency.py). Every failing
check says why; the report is stored in the registry beside the metrics and a failed candidate is
rejected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import psycopg
from omegaconf import OmegaConf

from recsys import registry

# The gate file of each registry kind: incremental ALS versions are kind "als", cold-item vectors "content".
GATED_KINDS = ("two_tower", "als", "ranker", "content")


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str


@dataclass
class GateReport:
    version: str
    kind: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def failures(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The report as `recsys models gates VERSION` prints it."""
        head = f"{self.version} ({self.kind}): gates {'PASSED' if self.passed else 'FAILED'} at {self.at}"
        return [head] + [f"  {'ok  ' if c.passed else 'FAIL'} {c.reason}" for c in self.checks]

    @classmethod
    def from_dict(cls, d: dict) -> "GateReport":
        return cls(d["version"], d["kind"], d["passed"], [Check(**c) for c in d["checks"]], d["at"])


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_checks(spec: list[dict], metrics: dict, live_metrics: dict | None) -> list[Check]:
    """The threshold checks of a gate file's `checks` against a version's metrics (and the live one's)."""
    out = []
    for check in spec:
        name = check["metric"]
        value = _number(metrics.get(name))
        if value is None:
            out.append(Check(name, False, None, None, f"{name}: missing from the version's metrics"))
            continue
        if "floor" in check:
            floor = float(check["floor"])
            out.append(Check(f"{name} >= floor", value >= floor, value, floor,
                             f"{name} = {value:.4f} {'>=' if value >= floor else '<'} floor {floor:.4f}"))
        # the live version measured on the candidate's own evaluation data when the trainer did that
        # (`live_metric`), else the number the live version was registered with
        live = _number(metrics.get(check["live_metric"])) if "live_metric" in check else None
        live = live if live is not None else _number((live_metrics or {}).get(name))
        if "live_tolerance" in check and live is not None:
            need = live - float(check["live_tolerance"])
            out.append(Check(f"{name} >= live - tolerance", value >= need, value, need,
                             f"{name} = {value:.4f} {'>=' if value >= need else '<'} live {live:.4f} - "
                             f"{float(check['live_tolerance']):.4f}"))
        if "above_metric" in check:
            other = check["above_metric"]
            bar = _number(metrics.get(other))
            ok = bar is not None and value > bar
            out.append(Check(f"{name} > {other}", ok, value, bar,
                             f"{name} = {value:.4f} {'>' if ok else '<='} {other} = "
                             f"{'missing' if bar is None else f'{bar:.4f}'}"))
    return out


def latency_check(spec, p95_ms: float | None, error: str = "") -> list[Check]:
    if spec is None:
        return []
    limit = float(spec.p95_ms)
    if p95_ms is None:
        return [Check("latency p95", False, None, limit,
                      f"serving latency: the candidate could not be loaded and timed ({error or 'no timing'})")]
    ok = p95_ms <= limit
    return [Check("latency p95", ok, round(p95_ms, 3), limit,
                  f"serving latency p95 {p95_ms:.2f} ms {'<=' if ok else '>'} {limit:.0f} ms (in process)")]


def evaluate(cfg, record: registry.ModelRecord, live: registry.ModelRecord | None, p95_ms: float | None,
             gate_kind: str | None = None, latency_error: str = "") -> GateReport:
    """The report of `record` against its kind's gate file and the live version of its kind."""
    kind = gate_kind or record.kind
    if kind not in cfg.gates:
        return GateReport(record.version, kind, False, [Check("gate file", False, None, None,
                                                               f"no gates for kind {kind!r} in conf/gates/")])
    spec = cfg.gates[kind]
    live_metrics = live.metrics if live is not None and live.version != record.version else None
    checks = metric_checks(OmegaConf.to_container(spec.checks, resolve=True), record.metrics, live_metrics)
    checks += latency_check(spec.get("latency"), p95_ms, latency_error)
    return GateReport(record.version, kind, all(c.passed for c in checks), checks)


def run_gates(conn: psycopg.Connection, cfg, version: str, gate_kind: str | None = None) -> GateReport:
    """Check `version` against its gates (timing it in process), store the report in the registry
    (a failed candidate becomes `rejected`) and return it."""
    from recsys.release.latency import serving_p95_ms

    record = registry.get(conn, version)
    kind = gate_kind or record.kind
    spec = cfg.gates.get(kind)
    p95, error = None, ""
    if spec is not None and spec.get("latency") is not None:
        try:
            p95 = serving_p95_ms(conn, cfg, record, kind, int(spec.latency.requests))
        except Exception as exc:   # a candidate that cannot be loaded fails its latency check, saying why
            error = f"{type(exc).__name__}: {exc}"
    report = evaluate(cfg, record, registry.live(conn, record.kind), p95, kind, error)
    registry.set_gates(conn, version, report.as_dict())
    return report

"""The rule sets a serving replica applies: the live one and the one in shadow, compiled against the
replica's catalog snapshot.

A replica polls Postgres for the live and shadow versions every `rules.poll_s` (on a thread of its
own, never in a request, and whether or not requests come: recsys/serve/resources.py), so a publish or a rollback applies everywhere within that time plus one
compile, without a restart. While Postgres is down the last compiled sets stay. Compiled sets are
rebuilt when the catalog snapshot changes, and hourly (an item's age moves on).
"""

from __future__ import annotations

import logging
import time

from recsys.release.arms import unit_hash
from recsys.rules import store
from recsys.rules.engine import CompiledRuleSet
from recsys.rules.filters import ItemTable
from recsys.rules.schema import RuleSet

log = logging.getLogger(__name__)
RECOMPILE_S = 3600


class RuleBook:
    def __init__(self, cfg):
        r = cfg.rules
        self.poll_s = float(r.poll_s)
        self.share = float(r.shadow.share)
        self.salt = str(r.shadow.salt)
        self.live: CompiledRuleSet | None = None
        self.shadow: CompiledRuleSet | None = None
        self._states: dict[str, int] = {}
        self._bodies: dict[int, RuleSet] = {}     # versions are immutable: read each once
        self._table: ItemTable | None = None
        self._compiled_at = 0.0
        self._fixed = False

    @property
    def live_version(self) -> str | None:
        live = self.live
        return live.version if live is not None else None

    def sampled(self, user_id: str | None, session_id: str | None, request_id: str) -> bool:
        """Whether the shadow set runs for this request: a deterministic `rules.shadow.share` of
        users (of sessions for anonymous traffic; of requests without either)."""
        return unit_hash(self.salt, user_id, session_id, request_id) < self.share

    def fix(self, live: CompiledRuleSet | None) -> None:
        """Serve `live` (or no rules) from now on, whatever Postgres says: polls change nothing after
        this (an experiment's arm, recsys/sim/ab.py)."""
        self.live, self.shadow, self._fixed = live, None, True

    def poll(self, conn, catalog, popularity: list[str]) -> bool:
        """Read the live and shadow versions; recompile what changed. True when something did."""
        if catalog is None or self._fixed:
            return False
        states = store.states(conn)
        now = time.time()
        stale = self._table is None or self._table.catalog is not catalog or now - self._compiled_at > RECOMPILE_S
        if states == self._states and not stale:
            return False
        for version in states.values():
            if version not in self._bodies:
                self._bodies[version] = RuleSet.model_validate(store.get(conn, version).body)
        if stale:
            self._table = ItemTable(catalog, now)
            self._compiled_at = now
        self.live = self._compile(states.get("live"), popularity)
        self.shadow = self._compile(states.get("shadow"), popularity)
        self._states = states
        log.info("rules: live %s, shadow %s", self.live_version, self.shadow.version if self.shadow else None)
        return True

    def _compile(self, version: int | None, popularity: list[str]) -> CompiledRuleSet | None:
        if version is None:
            return None
        current = self.live if self.live is not None and self.live.version == store.label(version) else \
            self.shadow if self.shadow is not None and self.shadow.version == store.label(version) else None
        if current is not None and current.table is self._table:
            return current
        return CompiledRuleSet(store.label(version), self._bodies[version], self._table, popularity)

    def compile(self, ruleset: RuleSet, version: str = "draft", popularity: list[str] = ()) -> CompiledRuleSet | None:
        """A set that is not live (a preview's draft) against the same catalog snapshot."""
        return CompiledRuleSet(version, ruleset, self._table, popularity) if self._table is not None else None

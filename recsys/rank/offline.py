"""Training lists for learning to rank, point-in-time correct, from the event log.

At sampled request points in history (each product view is a pdp_fbt request for that SKU, each session
start a homepage_hero request) we rebuild what serving would have known just before: the user's state
and the decayed item counters from events strictly before t (the online store's formulas:
value = sum w * exp(-(t - t_i) / tau)), the candidates the retrieval would have produced then, and the
28 features through `recsys.rank.features.compute`. Labels are what the user did next in the same
session within `horizon_h`: purchase 3 > cart 2 > view 1 > nothing 0. Requests are visited in time
order while the counters are swept forward, so everything is one pass over the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from recsys.features.online_store import UserState
from recsys.rank.features import COUNTER_KEYS, NAMES, SCORE_COLUMNS, ItemTable, RankContext, compute

GRADES = {"product_viewed": 1, "add_to_cart": 2, "purchase_completed": 3}
TYPES = ("product_viewed", "add_to_cart", "purchase_completed")
# A model's retrieval as serving runs it: (the user's state at t, the page and cart SKUs, t) -> scores
# over all items in ItemTable order (-inf where it knows no item), or None when it proposes nothing.
Scorer = Callable[[UserState, list[str], float], "np.ndarray | None"]


@dataclass
class TrainingLists:
    """Rows grouped by request (lists are contiguous, in time order)."""

    X: np.ndarray                  # (rows, 28)
    y: np.ndarray                  # (rows,) graded relevance
    group: np.ndarray              # (lists,) rows per list
    skus: np.ndarray               # (rows,) candidate SKU
    source_scores: np.ndarray      # (rows, len(SCORE_COLUMNS)) as handed to the features
    meta: pd.DataFrame             # per list: user_id, t, surface, page_sku, device, valid

    @property
    def qid(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.group)), self.group)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.group)])

    def subset(self, lists: np.ndarray) -> "TrainingLists":
        lists = np.flatnonzero(np.asarray(lists)) if np.asarray(lists).dtype == bool else np.asarray(lists)
        off = self.offsets
        rows = np.concatenate([np.arange(off[i], off[i + 1]) for i in lists]) if len(lists) else np.zeros(0, int)
        return TrainingLists(self.X[rows], self.y[rows], self.group[lists], self.skus[rows],
                             self.source_scores[rows], self.meta.iloc[lists].reset_index(drop=True))

    def split(self) -> tuple["TrainingLists", "TrainingLists"]:
        valid = self.meta["valid"].to_numpy(bool)
        return self.subset(~valid), self.subset(valid)


def _epoch(ts: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(ts, utc=True)
    return np.array([x.timestamp() for x in ts], dtype=np.float64)


class EventLog:
    """The event log as arrays, sorted by time (stable), with per-user positions."""

    def __init__(self, events: pd.DataFrame, items: ItemTable, features_cfg):
        ev = events[events["sku"].isin(items.index)].copy()
        ev["t"] = _epoch(ev["ts"])
        ev = ev.sort_values("t", kind="stable").reset_index(drop=True)
        self.items = items
        self.t = ev["t"].to_numpy()
        self.item = ev["sku"].map(items.index).to_numpy(np.int64)
        self.sku = ev["sku"].astype(str).to_numpy(object)
        self.type = ev["type"].astype(str).to_numpy(object)
        self.type_code = ev["type"].map({k: i for i, k in enumerate(TYPES)}).to_numpy(np.int64)
        self.user = ev["user_id"].astype(str).to_numpy(object)
        self.session = ev["session_id"].astype(object).to_numpy(object) if "session_id" in ev else \
            np.full(len(ev), None, object)
        self.device = ev["device"].astype(object).where(ev["device"].notna(), None).to_numpy(object) \
            if "device" in ev else np.full(len(ev), None, object)
        self.weights = {k: float(v) for k, v in dict(features_cfg.event_weights).items()}
        self.w = np.array([self.weights[x] for x in self.type], dtype=np.float64)
        self.session_views = int(features_cfg.session_views)
        self.aff_tau = float(features_cfg.affinity_half_life_h) * 3600 / math.log(2)
        self.by_user: dict[str, np.ndarray] = {u: np.asarray(rows) for u, rows in
                                               pd.Series(np.arange(len(ev))).groupby(self.user).groups.items()}

    def user_state(self, user_id: str, t: float) -> UserState:
        """What OnlineStore.user_state(now=t) returns after the user's events strictly before t."""
        rows = self.by_user.get(user_id, np.zeros(0, np.int64))
        rows = rows[: np.searchsorted(self.t[rows], t, side="left")]
        state = UserState(user_id=user_id)
        if not len(rows):
            return state
        views, cart, bought, aff = [], set(), {}, {}
        for r in rows:
            typ, sku = self.type[r], self.sku[r]
            if typ == "product_viewed":
                views.append((sku, self.t[r]))
            elif typ == "add_to_cart":
                cart.add(sku)
            else:
                cart.discard(sku)
                bought[sku] = self.t[r]
            cat = self.items.category[self.item[r]]
            if cat:
                aff[cat] = aff.get(cat, 0.0) + self.w[r] * math.exp(-(t - self.t[r]) / self.aff_tau)
        state.views = views[::-1][: self.session_views]
        state.cart, state.purchased, state.category_affinity = cart, bought, aff
        last = rows[-1]
        state.last_seen = float(self.t[last])
        devices = [self.device[r] for r in rows if self.device[r]]
        state.device = devices[-1] if devices else None
        return state


class CounterSweep:
    """Decayed item counters swept forward in time: `advance(t)` folds in every event before t."""

    def __init__(self, log: EventLog, windows_h: list[float]):
        self.log = log
        n = len(log.items.skus)
        taus = {f"{int(h)}h": float(h) * 3600 for h in windows_h}
        self.specs = []                                  # (type code or None = weighted, tau)
        for key in COUNTER_KEYS:
            typ, _, win = key.rpartition(":")
            self.specs.append((TYPES.index(typ), taus[win]))
        self.specs.append((None, taus["24h"]))           # trending: weighted activity, 24 h
        self.values = np.zeros((len(self.specs), n))
        self.now, self.pos = -np.inf, 0

    def advance(self, t: float) -> np.ndarray:
        """(len(COUNTER_KEYS) + 1, n_items) decayed values at t; the last row is trending."""
        log = self.log
        end = int(np.searchsorted(log.t, t, side="left"))
        sl = slice(self.pos, end)
        for k, (typ, tau) in enumerate(self.specs):
            if np.isfinite(self.now):
                self.values[k] *= math.exp(-(t - self.now) / tau)
            if end > self.pos:
                w = np.exp(-(t - log.t[sl]) / tau)
                if typ is None:
                    w = w * log.w[sl]
                else:
                    w = w * (log.type_code[sl] == typ)
                self.values[k] += np.bincount(log.item[sl], weights=w, minlength=self.values.shape[1])
        self.now, self.pos = t, end
        return self.values


def _top(scores: np.ndarray, n: int, exclude: np.ndarray) -> list[tuple[int, float]]:
    s = scores.astype(np.float64).copy()
    s[exclude] = -np.inf
    n = min(n, int(np.isfinite(s).sum()), len(s))
    if n <= 0:
        return []
    top = np.argpartition(-s, n - 1)[:n]
    top = top[np.lexsort((top, -s[top]))]
    return [(int(i), float(s[i])) for i in top if s[i] > 0 or not np.isclose(s[i], 0)]


class OfflineRetrieval:
    """The candidate set retrieval could have produced at t, from the past only."""

    def __init__(self, items: ItemTable, quotas: dict[str, int], max_candidates: int,
                 content: np.ndarray | None = None, scorers: dict[str, Scorer] | None = None):
        self.items, self.quotas, self.max = items, dict(quotas), int(max_candidates)
        self.content = None
        if content is not None:
            self.content = content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
        self.scorers = scorers or {}
        self.fits: dict[int, list[int]] = {}
        for src, row in items.accessories.items():
            for dst in row:
                self.fits.setdefault(dst, []).append(src)

    def candidates(self, t: float, user: UserState, context: list[str], counters: np.ndarray
                   ) -> tuple[list[str], np.ndarray]:
        idx = self.items.index
        exclude = np.array([idx[s] for s in context if s in idx], dtype=np.int64)
        views24, views7, carts7, buys7, trending = counters
        bestseller = 5 * buys7 + 2 * carts7 + 0.2 * views7
        lists: dict[str, list[tuple[int, float]]] = {}
        q = self.quotas
        if q.get("trending"):
            lists["trending"] = _top(trending, q["trending"], exclude)
        if q.get("bestsellers"):
            lists["bestsellers"] = _top(bestseller, q["bestsellers"], exclude)
        if q.get("accessories"):
            lists["accessories"] = self._accessories(context, user, bestseller, exclude, q["accessories"])
        recent = np.array([idx[s] for s, _ in user.views if s in idx], dtype=np.int64)
        if self.content is not None and q.get("content"):
            anchors = np.concatenate([exclude, recent])
            if len(anchors):
                query = self.content[anchors].mean(axis=0)
                query /= np.linalg.norm(query) or 1.0
                lists["content"] = _top(self.content @ query, q["content"], exclude)
        for name, fn in self.scorers.items():
            scores = fn(user, context, t)
            if scores is not None and q.get(name):
                lists[name] = _top(np.asarray(scores), q[name], exclude)
        # The blend (as the serving RankBlend): a source's share of the quotas, earlier ranks count more.
        total = sum(q.get(s, 0) for s in lists) or 1
        blend: dict[int, float] = {}
        for s, rows in lists.items():
            for rank, (i, _) in enumerate(rows):
                blend[i] = blend.get(i, 0.0) + (q[s] / total) * (1.0 - rank / q[s])
        order = sorted(blend, key=lambda i: (-blend[i], i))[: self.max]
        pos = {i: k for k, i in enumerate(order)}
        scores = np.full((len(order), len(SCORE_COLUMNS)), np.nan)
        cols = {c: j for j, c in enumerate(SCORE_COLUMNS)}
        for s, rows in lists.items():
            col = cols.get(f"score_{s}")
            if col is None:
                continue
            for i, v in rows:
                if i in pos:
                    scores[pos[i], col] = v
        return [self.items.skus[i] for i in order], scores

    def _accessories(self, context, user, popularity, exclude, n):
        idx, acc = self.items.index, self.items.accessories
        anchors = [idx[s] for s in context if s in idx]
        anchors += [idx[s] for s in sorted(user.purchased, key=user.purchased.get, reverse=True) if s in idx]
        devices: list[int] = []
        for a in anchors:
            devices.extend([a] if a in acc else self.fits.get(a, [])[:3])
        best: dict[int, float] = {}
        for rank, d in enumerate(dict.fromkeys(devices)):
            for i, w in acc.get(d, {}).items():
                best[i] = max(best.get(i, -np.inf), w / (1 + rank) + 0.01 * math.log1p(popularity[i]))
        ex = set(exclude.tolist())
        rows = sorted(((i, v) for i, v in best.items() if i not in ex), key=lambda x: (-x[1], x[0]))
        return rows[:n]


def request_points(log: EventLog, max_requests: int, seed: int, since: float = -np.inf) -> pd.DataFrame:
    """Rows of the log where a request happens: every view (pdp_fbt) and every session start
    (homepage_hero) at or after `since`, sampled down to `max_requests`, in time order."""
    views = np.flatnonzero(log.type == "product_viewed")
    sess = pd.Series(log.session).astype(str) + "|" + pd.Series(log.user)
    starts = np.flatnonzero(~sess.duplicated().to_numpy())
    views, starts = views[log.t[views] >= since], starts[log.t[starts] >= since]
    points = pd.DataFrame({"row": np.concatenate([views, starts]),
                           "surface": ["pdp_fbt"] * len(views) + ["homepage_hero"] * len(starts)})
    if len(points) > max_requests:
        points = points.sample(n=max_requests, random_state=seed)
    points["t"] = log.t[points["row"].to_numpy()]
    return points.sort_values(["t", "row", "surface"], kind="stable").reset_index(drop=True)


def labels_after(log: EventLog, row: int, include_self: bool, horizon_s: float) -> dict[str, int]:
    """Graded relevance of what the user did after `row` in the same session, within the horizon."""
    rows = log.by_user[log.user[row]]
    start = int(np.searchsorted(rows, row)) + (0 if include_self else 1)
    out: dict[str, int] = {}
    t0, s0 = log.t[row], log.session[row]
    for r in rows[start:]:
        if log.session[r] != s0 or log.t[r] - t0 > horizon_s:
            break
        g = GRADES[log.type[r]]
        if g > out.get(log.sku[r], 0):
            out[log.sku[r]] = g
    return out


def context_at(log: EventLog, row: int, surface: str, user: UserState, skus: list[str],
               source_scores: np.ndarray, counters: np.ndarray) -> RankContext:
    page = [log.sku[row]] if surface == "pdp_fbt" else []
    return RankContext(surface=surface, now=float(log.t[row]), device=log.device[row] or user.device,
                       page_skus=page, cart=sorted(user.cart), views=user.views, purchased=user.purchased,
                       category_affinity=user.category_affinity, candidates=skus,
                       source_scores=source_scores, counters=counters)


def request_context(log: EventLog, retrieval: OfflineRetrieval, counters_now: np.ndarray, row: int,
                    surface: str) -> RankContext | None:
    """The context of a request made just before log row `row` (its user, device and time), from
    `counters_now` (CounterSweep.advance(t)) and the user's events strictly before t."""
    t = float(log.t[row])
    user = log.user_state(log.user[row], t)
    page = [log.sku[row]] if surface == "pdp_fbt" else []
    cands, src = retrieval.candidates(t, user, page + sorted(user.cart), counters_now)
    if not cands:
        return None
    cidx = np.array([log.items.index[s] for s in cands])
    return context_at(log, row, surface, user, cands, src, counters_now[: len(COUNTER_KEYS), cidx].T.copy())


def features_at(log: EventLog, retrieval: OfflineRetrieval, row: int, surface: str,
                windows_h: list[float]) -> tuple[RankContext | None, np.ndarray]:
    """One request's context and (n, 28) features, with counters swept afresh (tests, debugging)."""
    ctx = request_context(log, retrieval, CounterSweep(log, windows_h).advance(float(log.t[row])), row, surface)
    return ctx, (compute(ctx, log.items) if ctx else np.zeros((0, len(NAMES))))


def build_lists(events: pd.DataFrame, items: ItemTable, features_cfg, ranker_cfg,
                content: np.ndarray | None = None, scorers: dict[str, Scorer] | None = None,
                keep_empty: bool = False, since: float = -np.inf, valid_days: float | None = None) -> TrainingLists:
    """Training lists from the log's requests at or after `since` (when the `scorers` were fitted on the
    events before it: recsys/rank/out_of_time.py). `ranker_cfg` carries quotas, max_candidates,
    max_requests, horizon_h, valid_days (unless given) and seed (conf/ranker/default.yaml)."""
    log = EventLog(events, items, features_cfg)
    retrieval = OfflineRetrieval(items, dict(ranker_cfg.quotas), int(ranker_cfg.max_candidates), content, scorers)
    sweep = CounterSweep(log, list(features_cfg.counter_windows_h))
    points = request_points(log, int(ranker_cfg.max_requests), int(ranker_cfg.seed), since)
    valid_days = float(ranker_cfg.valid_days if valid_days is None else valid_days)
    valid_from = (log.t.max() if len(log.t) else 0.0) - valid_days * 86400
    horizon = float(ranker_cfg.horizon_h) * 3600
    Xs, ys, groups, skus_all, scores_all, meta = [], [], [], [], [], []
    for row, surface, t in points[["row", "surface", "t"]].itertuples(index=False):
        ctx = request_context(log, retrieval, sweep.advance(t), row, surface)
        if ctx is None:
            continue
        labels = labels_after(log, row, include_self=surface == "homepage_hero", horizon_s=horizon)
        y = np.array([labels.get(s, 0) for s in ctx.candidates], dtype=np.int32)
        if not keep_empty and not y.any():
            continue
        Xs.append(compute(ctx, items)); ys.append(y); groups.append(len(y)); skus_all.extend(ctx.candidates)
        scores_all.append(ctx.source_scores)
        meta.append((log.user[row], float(t), surface, ctx.page_skus[0] if ctx.page_skus else None,
                     log.device[row], bool(t >= valid_from), int(row)))
    meta_df = pd.DataFrame(meta, columns=["user_id", "t", "surface", "page_sku", "device", "valid", "row"])
    if not Xs:
        return TrainingLists(np.zeros((0, len(NAMES))), np.zeros(0, np.int32), np.zeros(0, np.int64),
                             np.zeros(0, object), np.zeros((0, len(SCORE_COLUMNS))), meta_df)
    return TrainingLists(np.vstack(Xs), np.concatenate(ys), np.array(groups, np.int64),
                         np.array(skus_all, dtype=object), np.vstack(scores_all), meta_df)

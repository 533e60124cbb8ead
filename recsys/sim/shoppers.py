"""Simulated shoppers with hidden preferences, for generating history and replaying a policy.

Each shopper has private tastes (family/category affinity, brand affinity, price sensitivity, visit
rate) and owns a few devices. A visit is either browsing a category the shopper likes or shopping for
an owned device (cases, chargers, replacement parts), far likelier right after buying a device. Items
are viewed in order of hidden utility plus noise, some are added to the cart, and some carts are
checked out. The hidden state lives in underscore attributes and never reaches an event: anything
downstream (features, training, serving) sees only events, `users()` and the catalog.

Replaying a policy (`respond`, `organic_visit`) continues from the history's end: a rail is answered
by one choice among its slots and an outside option (leave the rail), with position bias and fatigue for
what the shopper was shown before; a visit whose entry rail got no click is an organic visit as in
history (search and category pages, which no policy controls).

History is simulated in rounds (every shopper's 1st visit, then every 2nd, ...) so that each visit
sees the devices bought in the visits before it, while every round is one vectorised numpy step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from recsys.sim.catalog import Catalog

EVENT_COLUMNS = ["event_id", "type", "user_id", "session_id", "sku", "ts", "device", "geo", "price",
                 "quantity", "order_id"]
EVENT_TYPES = ("product_viewed", "add_to_cart", "purchase_completed")

GEOS = {"US-CA": 0.16, "US-NY": 0.14, "US-TX": 0.12, "GB": 0.16, "DE": 0.14, "FR": 0.10, "NL": 0.06,
        "SE": 0.05, "ES": 0.07}
USER_DEVICES = {"mobile": 0.62, "desktop": 0.30, "tablet": 0.08}
WEEKDAY_TRAFFIC = (0.92, 0.90, 0.93, 0.97, 1.05, 1.15, 1.08)              # Monday .. Sunday
HOURLY_TRAFFIC = (0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0,  # 00h .. 11h (UTC)
                  1.0, 1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.5, 1.6, 1.4, 1.0, 0.6)  # 12h .. 23h
MAX_OWNED = 6                      # devices remembered per shopper (the oldest is forgotten first)
SECOND, MILLISECOND = 1_000_000_000, 1_000_000   # in nanoseconds
LONG_AGO = np.iinfo(np.int64).min // 2            # "bought before the simulation began"


@dataclass(frozen=True)
class Behaviour:
    """The simulator's tunables, calibrated so the defaults give a plausible storefront funnel."""

    sessions_per_day: float = 0.07      # mean visits per shopper per day
    activity_sigma: float = 0.9         # lognormal spread of visit rates: a few heavy shoppers
    max_sessions: int = 60              # per shopper per history
    extra_views: float = 4.0            # Poisson mean of views after a visit's first
    max_views: int = 12
    appeal_sigma: float = 1.7           # spread of item appeal: the popularity long tail
    brand_sigma: float = 0.8            # spread of brand likes and dislikes
    affinity_alpha: float = 0.4         # Dirichlet concentration of family tastes (low = focused)
    price_sensitivity: float = 1.0      # mean weight on log(price / category median)
    owned_devices: float = 1.2          # Poisson mean of devices owned at the start
    attach_rate: float = 0.2            # share of visits about an owned device's accessories
    attach_rate_new: float = 0.6        # ... within attach_days of buying a device
    attach_days: float = 21.0
    fit_boost: float = 3.0              # utility added to an item that fits the device in hand (x weight)
    misfit_penalty: float = 2.0         # utility removed from one that does not
    cart_logit: float = -2.1            # add-to-cart log-odds of an average view ...
    cart_logit_device: float = -0.8     # ... lower for a device,
    cart_logit_attach: float = 0.6      # ... higher when shopping for an owned device
    cart_slope: float = 0.6             # ... and rising with the shopper's utility for the item
    checkout_rate: float = 0.45         # chance a visit with a cart ends in an order
    # respond(): one choice among the rail's slots and "look elsewhere" (multinomial logit)
    look_elsewhere: float = 7.0         # utility of leaving the rail: sets how often a rail gets no click
    position_decay: float = 0.6         # attention at slot i is (1 + i) ** -decay
    look_again: float = 0.3             # chance of choosing again from the rest after a click
    fatigue: float = 0.7                # utility lost per log(1 + times the item was shown before) ...
    fatigue_half_life_days: float = 3.0  # ... a count that halves every this many days
    owned_penalty: float = 4.0          # utility lost by a device the shopper owns or just bought the like of


class ShopperWorld:
    """`n_users` shoppers over a catalog; deterministic by seed."""

    def __init__(self, catalog: Catalog, n_users: int = 20000, seed: int = 0, behaviour: Behaviour = Behaviour()):
        self.catalog, self.n_users, self.seed, self.b = catalog, n_users, seed, behaviour
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        self._index_items(catalog)

        # Observable attributes (what users() and the events show).
        self._user_ids = np.array([f"u{i:06d}" for i in range(n_users)], dtype=object)
        self._user_index = {u: i for i, u in enumerate(self._user_ids)}
        self._device = rng.choice(np.array(list(USER_DEVICES), dtype=object), n_users, p=list(USER_DEVICES.values()))
        self._geo = rng.choice(np.array(list(GEOS), dtype=object), n_users, p=list(GEOS.values()))

        # Hidden preferences.
        b, n_fam = behaviour, len(self._families)
        family_aff = rng.dirichlet(np.full(n_fam, b.affinity_alpha), n_users)
        within = np.empty((n_users, len(self._categories)))
        for f in range(n_fam):
            cols = np.flatnonzero(self._category_family == f)
            within[:, cols] = rng.dirichlet(np.ones(len(cols)), n_users)
        self._category_aff = family_aff[:, self._category_family] * within
        self._brand_aff = rng.normal(0.0, b.brand_sigma, (n_users, len(self._brands)))
        self._price_sens = _lognormal(rng, b.price_sensitivity, 0.5, n_users)
        self._activity = _lognormal(rng, b.sessions_per_day, b.activity_sigma, n_users)
        self._appeal = rng.normal(0.0, b.appeal_sigma, len(self._sku))

        self._owned = np.full((n_users, MAX_OWNED), -1)
        self._n_owned = np.zeros(n_users, dtype=int)
        self._last_device_buy = np.full(n_users, LONG_AGO)
        n_own = np.minimum(rng.poisson(b.owned_devices, n_users), MAX_OWNED)
        owners = np.repeat(np.arange(n_users), n_own)
        dev_aff = self._category_aff[:, self._device_cats]
        cats = self._device_cats[_sample_rows(dev_aff[owners], rng)]
        self._buy_devices(owners, self._pick(owners, cats, rng, k=1)[:, 0], np.full(len(owners), LONG_AGO))
        self._initial_state = (self._owned.copy(), self._n_owned.copy(), self._last_device_buy.copy())
        self._respond_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        self._shown: dict[int, dict[int, tuple[float, int]]] = {}   # user -> item -> (times shown, last ns)

    # ---------------------------------------------------------------------------------------- public

    def users(self) -> pd.DataFrame:
        """The observable side of each shopper: id, device type and region."""
        return pd.DataFrame({"user_id": self._user_ids, "device": self._device, "geo": self._geo})

    def history(self, days: int = 90, end: datetime = datetime(2026, 9, 1, tzinfo=UTC)) -> pd.DataFrame:
        """Events of `days` days before `end`, sorted by ts (EVENT_COLUMNS). The same arguments always
        give the same frame; afterwards the shoppers own what they bought, which `respond` continues from."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, days]))
        self._owned, self._n_owned, self._last_device_buy = (a.copy() for a in self._initial_state)
        self._shown = {}
        end_ns = pd.Timestamp(end).as_unit("ns").value
        users, starts = self._session_starts(days, end_ns, rng)
        visit = _rank_within(users)
        parts = [self._simulate_round(users[visit == k], starts[visit == k], np.flatnonzero(visit == k), rng)
                 for k in range(int(visit.max(initial=-1)) + 1)]
        ev = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]} if parts else _no_events()
        keep = ev["ts"] < end_ns
        ev = {key: v[keep] for key, v in ev.items()}
        order = np.lexsort((ev["type"], ev["ts"]))
        ev = {key: v[order] for key, v in ev.items()}
        sessions = np.array([f"s{i:07d}" for i in range(len(users))], dtype=object)
        orders = np.array([f"o{i:07d}" for i in range(len(users))], dtype=object)
        return self._frame(ev, sessions[ev["session"]],
                           np.where(ev["type"] == 2, orders[ev["session"]], None), rng)

    def visits(self, days: float, start: datetime, seed: int) -> list[tuple[str, datetime]]:
        """Visit start times of every shopper in [start, start + days), in time order, with the
        history's rates and seasonality (drawn from `seed`): when each shopper comes to the store."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3, seed]))
        end_ns = pd.Timestamp(start).as_unit("ns").value + int(days * 86400) * SECOND
        users, starts = self._session_starts(int(np.ceil(days)), end_ns, rng)
        order = np.argsort(starts, kind="stable")
        return [(str(self._user_ids[u]), pd.Timestamp(t, tz="UTC").to_pydatetime())
                for u, t in zip(users[order], starts[order])]

    def respond(self, user_id: str, slate: list[str], ts: datetime, rng_seed: int | None = None,
                surface: str | None = None, request_id: str | None = None,
                session_id: str | None = None) -> list[dict]:
        """The events a shopper generates when shown `slate` at `ts`: clicks (product_viewed), then maybe
        add_to_cart and a purchase. The shopper chooses one slot or none (leave the rail) with probability
        proportional to attention x exp(utility) — utility being hidden taste, interest in the category,
        the fit to an owned device, minus fatigue for items shown before and a penalty for a device owned
        or just bought the like of — and after a click looks again with probability `look_again`. Each
        event carries context {surface, request_id, slot}. Purchased devices join the shopper's devices,
        so later slates meet the accessory needs they create."""
        rng = self._respond_rng if rng_seed is None else np.random.default_rng(rng_seed)
        u = self._user_index[user_id]
        items = np.array([self._sku_index[s] for s in slate], dtype=int)
        if not len(items):
            return []
        b, ts_ns = self.b, pd.Timestamp(ts).as_unit("ns").value   # a naive ts is read as UTC
        interest = np.log(np.clip(self._category_aff[u, self._category[items]] * len(self._categories), 1e-2, 20))
        base = self._utility(np.array([u]), items)[0]
        need = self._need(u, items)
        utility = (base + interest + b.fit_boost * need - b.fatigue * np.log1p(self._times_shown(u, items, ts_ns))
                   - b.owned_penalty * self._owned_like(u, items, ts_ns))
        clicked = self._choose(utility, rng)
        self._remember_shown(u, items, ts_ns)
        lift = base - base.mean()           # as in history: compared with the rest of what was on screen
        carted = clicked & (rng.random(len(items)) < self._cart_prob(items, lift, need > 0))
        bought = carted & (rng.random() < b.checkout_rate) & (rng.random(len(items)) < 0.9)
        session_id = session_id or f"{user_id}-{pd.Timestamp(ts_ns, tz='UTC'):%Y%m%d}"
        order_id = f"o-{user_id}-{ts_ns // SECOND}" if bought.any() else None
        view_ts = ts_ns + np.cumsum(rng.exponential(20 * SECOND, len(items))).astype(np.int64)
        view_ts = view_ts // MILLISECOND * MILLISECOND
        order_ts = view_ts[carted].max(initial=ts_ns) + 300 * SECOND          # one checkout for the order
        rows = sorted([(view_ts[i], 0, i) for i in np.flatnonzero(clicked)]
                      + [(view_ts[i] + 30 * SECOND, 1, i) for i in np.flatnonzero(carted)]
                      + [(order_ts, 2, i) for i in np.flatnonzero(bought)])
        if bought.any():
            devices = items[bought & (self._kind[items] == "device")]
            self._buy_devices(np.full(len(devices), u), devices, np.full(len(devices), ts_ns))
        qty = self._quantity(items, rng)
        ids = _uuids(rng, len(rows))
        return [{"event_id": ids[n], "type": EVENT_TYPES[kind], "user_id": user_id, "session_id": session_id,
                 "sku": str(self._sku[items[i]]), "ts": pd.Timestamp(t, tz="UTC"), "device": self._device[u],
                 "geo": self._geo[u], "price": float(self._price[items[i]]),
                 "quantity": int(qty[i]) if kind else 1, "order_id": order_id if kind == 2 else None,
                 "context": {"surface": surface, "request_id": request_id, "slot": int(i)}}
                for n, (t, kind, i) in enumerate(rows)]

    def organic_visit(self, user_id: str, ts: datetime, rng_seed: int, session_id: str) -> list[dict]:
        """A visit no rail led: what the shopper finds through search and category pages, exactly as in
        history (an intent, a category, views by hidden utility, maybe a cart and an order). Events in time
        order with no context (no rail led to them)."""
        rng = np.random.default_rng(rng_seed)
        u = self._user_index[user_id]
        ts_ns = pd.Timestamp(ts).as_unit("ns").value
        ev = self._simulate_round(np.array([u]), np.array([ts_ns]), np.array([0]), rng)
        order = np.lexsort((ev["type"], ev["ts"]))
        ids = _uuids(rng, len(order))
        order_id = f"o-{user_id}-{ts_ns // SECOND}-organic"
        return [{"event_id": ids[n], "type": EVENT_TYPES[ev["type"][j]], "user_id": user_id,
                 "session_id": session_id, "sku": str(self._sku[ev["item"][j]]),
                 "ts": pd.Timestamp(ev["ts"][j] // MILLISECOND * MILLISECOND, tz="UTC"), "device": self._device[u],
                 "geo": self._geo[u], "price": float(self._price[ev["item"][j]]), "quantity": int(ev["quantity"][j]),
                 "order_id": order_id if ev["type"][j] == 2 else None, "context": None}
                for n, j in enumerate(order)]

    # ------------------------------------------------------------------------------- catalog indexes

    def _index_items(self, catalog: Catalog) -> None:
        """Integer codes and arrays over the catalog, plus the fit graph grouped by accessory category."""
        items = catalog.items.reset_index(drop=True)
        self._sku = items["sku"].to_numpy(dtype=object)
        self._sku_index = {s: i for i, s in enumerate(self._sku)}
        self._kind = items["kind"].to_numpy(dtype=object)
        self._price = items["price"].to_numpy(dtype=float)
        self._category, self._categories = pd.factorize(items["category"], sort=True)
        self._brand, self._brands = pd.factorize(items["brand"], sort=True)
        self._families = sorted(items["family"].unique())
        first = items.groupby("category", sort=True)["family"].first()
        self._category_family = np.array([self._families.index(f) for f in first])
        median = items.groupby("category")["price"].transform("median").to_numpy()
        self._zprice = np.log(np.maximum(self._price, 0.01) / np.maximum(median, 0.01))
        self._members = [np.flatnonzero(self._category == c) for c in range(len(self._categories))]
        self._position = np.empty(len(items), dtype=int)
        for members in self._members:
            self._position[members] = np.arange(len(members))
        is_device = items.groupby("category", sort=True)["kind"].first().to_numpy() == "device"
        self._device_cats = np.flatnonzero(is_device)

        e = catalog.edges
        src = e["src_sku"].map(self._sku_index).to_numpy()
        dst = e["dst_sku"].map(self._sku_index).to_numpy()
        w = e["weight"].to_numpy(dtype=float)
        self._fit_weight = dict(zip(zip(src.tolist(), dst.tolist()), w.tolist()))
        self._edges_by_category = {
            c: pd.DataFrame({"anchor": src[m], "col": self._position[dst[m]], "w": w[m]})
            for c in range(len(self._categories)) if (m := self._category[dst] == c).any()}
        # Which accessory categories a device category's owners shop for, by number of fitting SKUs.
        attach = np.zeros((len(self._categories), len(self._categories)))
        np.add.at(attach, (self._category[src], self._category[dst]), 1.0)
        self._attach_cats = attach

    # ------------------------------------------------------------------------------------ simulation

    def _session_starts(self, days: int, end_ns: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """Visit start times in [end - days, end) with weekly and daily seasonality; sorted by (user, time)."""
        first_ns = end_ns - days * 86400 * SECOND
        first_day = pd.Timestamp(first_ns, tz="UTC").normalize()
        grid = (end_ns - first_day.value - 1) // (86400 * SECOND) + 1         # calendar days touched
        n = rng.poisson(self._activity * grid)
        users = np.repeat(np.arange(self.n_users), n)
        day_p = np.array(WEEKDAY_TRAFFIC)[(first_day.day_of_week + np.arange(grid)) % 7]
        hour_p = np.array(HOURLY_TRAFFIC)
        day = rng.choice(grid, len(users), p=day_p / day_p.sum())
        hour = rng.choice(24, len(users), p=hour_p / hour_p.sum())
        starts = first_day.value + (day * 86400 + hour * 3600 + rng.integers(0, 3600, len(users))) * SECOND
        keep = (starts >= first_ns) & (starts < end_ns)
        users, starts = users[keep], starts[keep]
        order = np.lexsort((starts, users))
        users, starts = users[order], starts[order]
        cap = _rank_within(users) < self.b.max_sessions
        return users[cap], starts[cap]

    def _simulate_round(self, users, starts, session_ids, rng) -> dict:
        """One visit for each of `users`: pick an intent and category, views, carts, an order."""
        b = self.b
        recent = starts - self._last_device_buy[users] < b.attach_days * 86400 * SECOND
        rate = np.where(recent, b.attach_rate_new, b.attach_rate)
        attach = (self._n_owned[users] > 0) & (rng.random(len(users)) < rate)
        anchor = np.full(len(users), -1)
        latest = self._owned[users, (self._n_owned[users] - 1) % MAX_OWNED]
        any_owned = self._owned[users, rng.integers(0, np.maximum(np.minimum(self._n_owned[users], MAX_OWNED), 1))]
        anchor[attach] = np.where(recent[attach] | (rng.random(attach.sum()) < 0.5), latest[attach], any_owned[attach])
        attach &= self._attach_cats[self._category[np.maximum(anchor, 0)]].sum(1) > 0
        cats = np.empty(len(users), dtype=int)
        cats[~attach] = _sample_rows(self._category_aff[users[~attach]], rng)
        cats[attach] = _sample_rows(self._attach_cats[self._category[anchor[attach]]], rng)
        anchor[~attach] = -1

        parts = []
        for c in np.unique(cats):
            rows = np.flatnonzero(cats == c)
            parts.append(self._visit_category(c, users[rows], anchor[rows], starts[rows], session_ids[rows], rng))
        ev = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        bought = (ev["type"] == 2) & (self._kind[ev["item"]] == "device")
        self._buy_devices(ev["user"][bought], ev["item"][bought], ev["ts"][bought])
        return ev

    def _visit_category(self, c, users, anchor, starts, session_ids, rng) -> dict:
        """Views, carts and orders of visits that all browse category `c`."""
        b, members = self.b, self._members[c]
        base = self._utility(users, members)
        utility = base.copy()
        fits = np.zeros(utility.shape, dtype=bool)
        shopping = anchor >= 0
        if shopping.any() and c in self._edges_by_category:
            rows = pd.DataFrame({"row": np.flatnonzero(shopping), "anchor": anchor[shopping]})
            pairs = rows.merge(self._edges_by_category[c], on="anchor")
            utility[pairs["row"], pairs["col"]] += b.fit_boost * pairs["w"].to_numpy()
            fits[pairs["row"], pairs["col"]] = True
            utility[shopping] -= b.misfit_penalty * ~fits[shopping]
        k = min(b.max_views, len(members))
        noisy = utility + rng.gumbel(size=utility.shape)
        top = np.argsort(-noisy, axis=1)[:, :k]
        n_views = np.minimum(1 + rng.poisson(b.extra_views, len(users)), k)
        row, slot = np.nonzero(np.arange(k) < n_views[:, None])
        col = top[row, slot]
        items = members[col]
        gaps = rng.exponential(45 * SECOND, (len(users), k)).cumsum(1).astype(np.int64)
        view_ts = starts[row] + gaps[row, slot]

        liked = base[row, col]            # carts go to the items the shopper liked best of those seen
        lift = liked - (np.bincount(row, liked, len(users)) / n_views)[row]
        carted = rng.random(len(row)) < self._cart_prob(items, lift, fits[row, col])
        checkout = rng.random(len(users)) < b.checkout_rate
        bought = carted & checkout[row] & (rng.random(len(row)) < 0.9)
        order_ts = starts + gaps[np.arange(len(users)), n_views - 1] + rng.integers(60, 400, len(users)) * SECOND
        qty = self._quantity(items, rng)

        cart_ts = view_ts + rng.integers(5, 90, len(row)) * SECOND
        pick = [np.ones(len(row), bool), carted, bought]
        when = [view_ts, cart_ts, order_ts[row]]
        return {
            "type": np.concatenate([np.full(m.sum(), t, dtype=np.int8) for t, m in enumerate(pick)]),
            "user": np.concatenate([users[row][m] for m in pick]),
            "session": np.concatenate([session_ids[row][m] for m in pick]),
            "item": np.concatenate([items[m] for m in pick]),
            "ts": np.concatenate([w[m] for w, m in zip(when, pick)]),
            "quantity": np.concatenate([np.ones(len(row), int), qty[carted], qty[bought]]),
        }

    # ------------------------------------------------------------------------------ hidden utilities

    def _utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Hidden utility of each item for each shopper: appeal + brand taste - price pain."""
        return (self._appeal[items][None, :] + self._brand_aff[users[:, None], self._brand[items][None, :]]
                - self._price_sens[users, None] * self._zprice[items][None, :])

    def _need(self, u: int, items: np.ndarray) -> np.ndarray:
        """How strongly each item fits a device the shopper owns (the best edge weight, 0 if none)."""
        owned = self._owned[u, : min(self._n_owned[u], MAX_OWNED)]
        need = np.zeros(len(items))
        for j, i in enumerate(items):
            for d in owned:
                need[j] = max(need[j], self._fit_weight.get((d, i), 0.0))
        return need

    def _choose(self, utility: np.ndarray, rng) -> np.ndarray:
        """Which slots get a click: a multinomial-logit choice among the slots (weighted by position
        attention) and leaving the rail; after each click another look with probability `look_again`."""
        b = self.b
        weight = (1.0 + np.arange(len(utility))) ** -b.position_decay * np.exp(np.minimum(utility, 30.0))
        clicked = np.zeros(len(utility), dtype=bool)
        while True:
            w = np.where(clicked, 0.0, weight)
            p = np.append(w, np.exp(b.look_elsewhere)) / (w.sum() + np.exp(b.look_elsewhere))
            pick = rng.choice(len(p), p=p)
            if pick == len(utility):
                return clicked
            clicked[pick] = True
            if clicked.all() or rng.random() >= b.look_again:
                return clicked

    def _times_shown(self, u: int, items: np.ndarray, ts_ns: int) -> np.ndarray:
        """How often each item was shown to the shopper before, halving every fatigue_half_life_days."""
        seen = self._shown.get(u)
        out = np.zeros(len(items))
        if not seen:
            return out
        half = self.b.fatigue_half_life_days * 86400 * SECOND
        for j, i in enumerate(items.tolist()):
            if i in seen:
                count, last = seen[i]
                out[j] = count * 0.5 ** (max(ts_ns - last, 0) / half)
        return out

    def _remember_shown(self, u: int, items: np.ndarray, ts_ns: int) -> None:
        counts = self._times_shown(u, items, ts_ns)
        seen = self._shown.setdefault(u, {})
        for i, count in zip(items.tolist(), counts.tolist()):
            seen[i] = (count + 1.0, ts_ns)

    def _owned_like(self, u: int, items: np.ndarray, ts_ns: int) -> np.ndarray:
        """1 for a device the shopper owns, or of the category of the device bought within attach_days."""
        owned = self._owned[u, : min(self._n_owned[u], MAX_OWNED)]
        like = np.isin(items, owned)
        if ts_ns - self._last_device_buy[u] < self.b.attach_days * 86400 * SECOND:
            latest = self._owned[u, (self._n_owned[u] - 1) % MAX_OWNED]
            like |= self._category[items] == self._category[latest]
        return (like & (self._kind[items] == "device")).astype(float)

    def _cart_prob(self, items: np.ndarray, lift: np.ndarray, fits: np.ndarray) -> np.ndarray:
        b = self.b
        logit = (b.cart_logit + b.cart_logit_device * (self._kind[items] == "device")
                 + b.cart_logit_attach * fits + b.cart_slope * lift)
        return _sigmoid(logit)

    def _quantity(self, items: np.ndarray, rng) -> np.ndarray:
        """Devices sell one at a time; accessories and parts now and then two or three."""
        extra = rng.choice(3, len(items), p=[0.88, 0.10, 0.02])
        return np.where(self._kind[items] == "device", 1, 1 + extra)

    def _buy_devices(self, users: np.ndarray, devices: np.ndarray, ts: np.ndarray) -> None:
        for u, d, t in zip(users.tolist(), devices.tolist(), ts.tolist()):
            self._owned[u, self._n_owned[u] % MAX_OWNED] = d
            self._n_owned[u] += 1
            self._last_device_buy[u] = max(self._last_device_buy[u], t)

    def _pick(self, users: np.ndarray, cats: np.ndarray, rng, k: int) -> np.ndarray:
        """For each (user, category), `k` items of the category drawn by hidden utility (Gumbel top-k)."""
        out = np.empty((len(users), k), dtype=int)
        for c in np.unique(cats):
            rows, members = np.flatnonzero(cats == c), self._members[c]
            noisy = self._utility(users[rows], members) + rng.gumbel(size=(len(rows), len(members)))
            out[rows] = members[np.argsort(-noisy, axis=1)[:, :k]]
        return out

    # ---------------------------------------------------------------------------------------- output

    def _frame(self, ev: dict, session_ids: np.ndarray, order_ids: np.ndarray, rng) -> pd.DataFrame:
        users, items = ev["user"], ev["item"]
        return pd.DataFrame({
            "event_id": _uuids(rng, len(users)),
            "type": np.array(EVENT_TYPES, dtype=object)[ev["type"]],
            "user_id": self._user_ids[users],
            "session_id": session_ids,
            "sku": self._sku[items],
            "ts": pd.to_datetime(ev["ts"] // MILLISECOND * MILLISECOND, utc=True),
            "device": self._device[users],
            "geo": self._geo[users],
            "price": self._price[items],
            "quantity": ev["quantity"].astype(int),
            "order_id": order_ids,
        })[EVENT_COLUMNS]


def _sample_rows(weights: np.ndarray, rng) -> np.ndarray:
    """One column index per row, drawn in proportion to that row's weights."""
    cum = np.cumsum(weights, axis=1)
    draw = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < draw[:, None]).sum(1), weights.shape[1] - 1)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    idx = np.arange(len(groups))
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1] if len(groups) else np.array([], int)
    return idx - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _lognormal(rng, mean: float, sigma: float, n: int) -> np.ndarray:
    """Positive draws with the given mean: most near it, a few far above."""
    return rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma, n)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _uuids(rng, n: int) -> np.ndarray:
    """`n` version-4 UUID strings drawn from `rng` (reproducible, unlike uuid.uuid4), vectorised."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, [i for i in range(36) if i not in (8, 13, 18, 23)]] = hexes
    return out.view("S36").ravel().astype(str).astype(object)


def _no_events() -> dict:
    return {k: np.array([], dtype=int) for k in ("type", "user", "session", "item", "ts", "quantity")}

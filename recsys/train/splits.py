"""Train / validation / test splits.

``leave_one_out`` reproduces the protocol of the published sequential-recommendation numbers
(shared/data/amazon-beauty/README.md); ``time_holdout`` is the split for our own event logs,
where a global cutoff avoids training on the future of other users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd


@dataclass
class LeaveOneOut:
    """Per-user arrays, row ``u`` is user ``u`` (items are 0-based indices).

    - ``train``: every item but the last two (what models are fitted on);
    - ``valid_input`` / ``valid_target``: the training prefix and the second-to-last item;
    - ``test_input`` / ``test_target``: everything before the last item, truncated to the most
      recent ``max_len``; ``test_seen`` is the untruncated history, excluded from the ranking.
    The ``*_ts`` fields hold the aligned timestamps when they were given.
    """

    train: list[np.ndarray]
    valid_input: list[np.ndarray]
    valid_target: np.ndarray
    test_input: list[np.ndarray]
    test_target: np.ndarray
    test_seen: list[np.ndarray]
    max_len: int
    train_ts: list[np.ndarray] | None = None
    valid_input_ts: list[np.ndarray] | None = None
    valid_target_ts: np.ndarray | None = None
    test_input_ts: list[np.ndarray] | None = None
    test_target_ts: np.ndarray | None = None

    @property
    def valid_seen(self) -> list[np.ndarray]:
        return self.train

    @property
    def n_users(self) -> int:
        return len(self.train)

    def train_plus_valid(self) -> list[np.ndarray]:
        """All but the last item: what a non-sequential model may fit on before the test."""
        return self.test_seen


def leave_one_out(
    sequences: Sequence[Sequence[int]],
    timestamps: Sequence[Sequence[int]] | None = None,
    max_len: int = 50,
    min_len: int = 3,
) -> LeaveOneOut:
    """Split time-ordered per-user sequences; users shorter than ``min_len`` are rejected."""
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    short = [i for i, s in enumerate(seqs) if len(s) < min_len]
    if short:
        raise ValueError(f"{len(short)} users have fewer than {min_len} items (first: row {short[0]})")
    train = [s[:-2] for s in seqs]
    split = LeaveOneOut(
        train=train,
        valid_input=[s[-max_len:] for s in train],
        valid_target=np.array([s[-2] for s in seqs], dtype=np.int64),
        test_input=[s[:-1][-max_len:] for s in seqs],
        test_target=np.array([s[-1] for s in seqs], dtype=np.int64),
        test_seen=[s[:-1] for s in seqs],
        max_len=max_len,
    )
    if timestamps is not None:
        ts = [np.asarray(t, dtype=np.int64) for t in timestamps]
        if any(len(a) != len(b) for a, b in zip(seqs, ts)) or len(ts) != len(seqs):
            raise ValueError("timestamps are not aligned with sequences")
        split.train_ts = [t[:-2] for t in ts]
        split.valid_input_ts = [t[:-2][-max_len:] for t in ts]
        split.valid_target_ts = np.array([t[-2] for t in ts], dtype=np.int64)
        split.test_input_ts = [t[:-1][-max_len:] for t in ts]
        split.test_target_ts = np.array([t[-1] for t in ts], dtype=np.int64)
    return split


@dataclass
class TimeHoldout:
    """``train``: events before the cutoff. ``targets``: each user's first event at/after it
    (only users with training history, unless asked otherwise)."""

    train: pd.DataFrame
    targets: pd.DataFrame
    cutoff: object = field(default=None)


def time_holdout(
    events: pd.DataFrame,
    cutoff,
    user_col: str = "user_id",
    item_col: str = "sku",
    ts_col: str = "ts",
    require_history: bool = True,
) -> TimeHoldout:
    """Global time split of an event log: no training event is later than any target."""
    missing = {user_col, item_col, ts_col} - set(events.columns)
    if missing:
        raise KeyError(f"events lack columns {sorted(missing)}")
    ev = events.sort_values([ts_col, user_col], kind="stable")
    before = ev[ts_col] < cutoff
    train = ev[before].reset_index(drop=True)
    after = ev[~before]
    targets = after.groupby(user_col, sort=True, as_index=False).head(1)
    if require_history:
        targets = targets[targets[user_col].isin(train[user_col].unique())]
    return TimeHoldout(train=train, targets=targets.reset_index(drop=True), cutoff=cutoff)


def sequences_from_events(
    events: pd.DataFrame, user_col: str = "user_id", item_col: str = "sku", ts_col: str = "ts"
) -> pd.Series:
    """Per-user time-ordered item lists (a Series indexed by user)."""
    ev = events.sort_values([user_col, ts_col], kind="stable")
    return ev.groupby(user_col, sort=True)[item_col].agg(list)

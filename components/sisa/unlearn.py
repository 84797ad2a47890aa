"""What an unlearning request may remove, which originals to forget, and what serving it cost.

- Deletion capacity (the paper's Definition 3 / Theorem 1): one unlearning call may remove at most a fraction
  ``max_deletion_fraction`` (c) of each affected shard's current data; ``check_deletion_capacity`` refuses more and
  says how to split the request.
- Forgetting orders (``FORGET_ORDERS``) for Algorithm 2's choice of originals to forget: SISA's cost of removing a
  point from slice r is retraining stages r..R, so ``last_slice_first`` (originals of later slices first) is cheaper
  than ``random`` (uniform).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from fairforget.components.sisa.plan import PlanError, ShardPlan
from fairforget.errors import ConfigError, DeletionCapacityError  # noqa: F401 (re-exported)


def check_deletion_capacity(plan: ShardPlan, rows: pd.DataFrame, max_deletion_fraction: float) -> None:
    """Refuse a request whose rows (plan rows of the ids to forget) exceed c of any shard's live data, or empty
    a shard."""
    if not 0 < max_deletion_fraction <= 1:
        raise ConfigError(f"max_deletion_fraction must be in (0, 1], got {max_deletion_fraction}")
    sizes = plan.shard_sizes()
    for shard, count in rows.groupby("shard").size().items():
        size = sizes[int(shard)]
        if count >= size:
            raise PlanError(f"the request removes all {size} remaining samples of shard {shard}, which would leave "
                            f"it empty: forget fewer of its samples or train with fewer shards")
        if count > max_deletion_fraction * size:
            per_call = max(1, math.floor(max_deletion_fraction * size))
            raise DeletionCapacityError(
                f"the request removes {count} of shard {shard}'s {size} samples ({count / size:.1%}), above "
                f"max_deletion_fraction={max_deletion_fraction}: split it into at least {math.ceil(count / per_call)} "
                f"calls of at most {per_call} samples of that shard each (or raise max_deletion_fraction)")


def forget_random(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` ids drawn uniformly without replacement."""
    chosen = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return rows["id"].iloc[np.sort(chosen)].tolist()


def forget_last_slice_first(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` ids from the latest slices first (random within a slice): the cheapest to unlearn."""
    shuffled = rows.iloc[rng.permutation(len(rows))]
    ordered = shuffled.sort_values("slice", ascending=False, kind="stable")
    return ordered["id"].iloc[:n].tolist()


FORGET_ORDERS: dict[str, Callable[[pd.DataFrame, int, np.random.Generator], list[str]]] = {
    "random": forget_random,
    "last_slice_first": forget_last_slice_first,
}


def sample_forget_set(plan: ShardPlan, candidates, n_per_shard: int, order: str = "random",
                      seed: int = 0) -> list[str]:
    """Pick up to ``n_per_shard`` live ids of ``candidates`` in every shard, by ``order`` (a ``FORGET_ORDERS`` key).

    Deterministic given ``seed``. Candidates already forgotten or unknown raise ``PlanError``.
    """
    if order not in FORGET_ORDERS:
        raise ConfigError(f"unknown forgetting order {order!r}; known orders: {', '.join(sorted(FORGET_ORDERS))}")
    if n_per_shard < 0:
        raise ConfigError(f"n_per_shard must be >= 0, got {n_per_shard}")
    rows = plan.rows_of(candidates)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for shard in range(plan.num_shards):
        in_shard = rows[rows["shard"] == shard]
        if len(in_shard):
            chosen.extend(FORGET_ORDERS[order](in_shard, n_per_shard, rng))
    return chosen


def stage_cost(plan: ShardPlan, ids) -> dict[int, int]:
    """For each affected shard, the first slice (0-based) holding a requested id: stages from it on retrain."""
    rows = plan.rows_of(ids)
    return {int(s): int(r) for s, r in rows.groupby("shard")["slice"].min().items()}


@dataclass
class UnlearnReport:
    """What serving one deletion request did."""

    points: int
    shards_retrained: list[int] = field(default_factory=list)
    slices_retrained: int = 0  # training stages recomputed, summed over shards
    first_slice: dict[int, int] = field(default_factory=dict)  # shard -> first affected slice (0-based)
    seconds: float = 0.0
    checkpoints_pruned: int = 0
    exact: bool | None = None  # runtime audit result (None = not audited)
    audited_shard: int | None = None

    def as_metrics(self) -> dict[str, float]:
        metrics = {"unlearn/points": float(self.points), "unlearn/shards_retrained": float(len(self.shards_retrained)),
                   "unlearn/slices_retrained": float(self.slices_retrained), "time/unlearn_s": self.seconds}
        if self.exact is not None:
            metrics["unlearn/exact"] = float(self.exact)
        return metrics

    def to_dict(self) -> dict:
        return asdict(self)

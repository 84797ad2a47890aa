"""``ShardPlan``: which shard and slice every sample belongs to, in what order, and whether it was forgotten.

SISA (Bourtoule et al. 2021, Sec. IV) splits the training data into k disjoint shards and each shard into R slices.
The plan is the single owner of that membership; the trainer only reads it. Ids are strings.

Guarantees: assignment is a deterministic function of (ids, labels, k, R, seed); every label is spread over the
shards and over the slices of each shard as evenly as its count allows (stratified round robin); the order of
samples inside a slice is fixed by ``order`` (a seeded permutation for the initial data, insertion order after it).
"""

from __future__ import annotations

import io
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fairforget.errors import PlanError  # noqa: F401 (re-exported)

PLAN_COLUMNS = ("id", "label", "shard", "slice", "order", "deleted")



def _deal_stratified(labels: np.ndarray, bins: int, rng: np.random.Generator) -> np.ndarray:
    """Bin index (N,) for each sample: each label's samples shuffled and dealt round robin over ``bins``.

    The dealing of each label starts where the previous label stopped, so bin sizes differ by at most one.
    """
    out = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        out[members] = (start + np.arange(len(members))) % bins
        start = (start + len(members)) % bins
    return out


class ShardPlan:
    """Membership table of a SISA model: one row per sample ever trained on (forgotten rows stay, flagged).

    ``table`` columns: id (str, unique), label (int), shard (0..k-1), slice (0..R-1), order (int, unique:
    the position of the sample in its slice's training order), deleted (bool).
    """

    def __init__(self, table: pd.DataFrame, num_shards: int, num_slices: int, seed: int) -> None:
        validate_counts(num_shards, num_slices)
        missing = [c for c in PLAN_COLUMNS if c not in table.columns]
        if missing:
            raise PlanError(f"plan table lacks columns {missing}")
        self.table = table.loc[:, list(PLAN_COLUMNS)].reset_index(drop=True)
        self.table["id"] = self.table["id"].astype(str)
        self.table["deleted"] = self.table["deleted"].astype(bool)
        if self.table["id"].duplicated().any():
            raise PlanError(f"duplicate ids in plan, e.g. {self.table.loc[self.table['id'].duplicated(), 'id'].iloc[0]!r}")
        self.num_shards = int(num_shards)
        self.num_slices = int(num_slices)
        self.seed = int(seed)

    # construction ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: Sequence[str], labels: Sequence[int], num_shards: int = 5, num_slices: int = 4,
              seed: int = 0, groups: Sequence[str] | None = None) -> "ShardPlan":
        """Assign ``ids`` (with their int ``labels``) to k shards x R slices, stratified by label, from ``seed``.

        ``groups`` (optional, aligned with ``ids``): rows with the same group key share one shard, the one dealt to
        the group's first row (e.g. repeated copies of one record, grouped by the record's id: forgetting the
        record then retrains one shard, not every shard that got a copy). Without it, or with every key distinct,
        each row is its own group and the plan is the same.
        """
        validate_counts(num_shards, num_slices)
        ids = np.asarray([str(i) for i in ids], dtype=object)
        labels = np.asarray(labels, dtype=np.int64)
        if len(ids) != len(labels):
            raise PlanError(f"{len(ids)} ids but {len(labels)} labels: they must be aligned")
        if len(ids) < num_shards * num_slices:
            raise PlanError(f"{len(ids)} samples cannot fill {num_shards} shards x {num_slices} slices: "
                            f"lower num_shards or num_slices")
        if groups is not None and len(groups) != len(ids):
            raise PlanError(f"{len(groups)} group keys for {len(ids)} ids: they must be aligned")
        rng = np.random.default_rng([seed, 0x5150])
        if groups is None:
            shard = _deal_stratified(labels, num_shards, rng)
        else:
            # the first row of each group (in row order) is dealt; the other rows follow it
            keys = pd.Series([str(g) for g in groups])
            leaders = np.flatnonzero(~keys.duplicated().to_numpy())
            leader_shard = pd.Series(_deal_stratified(labels[leaders], num_shards, rng), index=keys.iloc[leaders])
            shard = leader_shard.loc[keys].to_numpy()
        slice_ = np.empty(len(ids), dtype=np.int64)
        for s in range(num_shards):
            members = np.flatnonzero(shard == s)
            slice_[members] = _deal_stratified(labels[members], num_slices, rng)
        table = pd.DataFrame({"id": ids, "label": labels, "shard": shard, "slice": slice_,
                              "order": rng.permutation(len(ids)), "deleted": False})
        return cls(table, num_shards, num_slices, seed)

    def add(self, ids: Sequence[str], labels: Sequence[int], shard_of: Mapping[str, int] | Sequence[int] | None = None,
            into_last_slices: int = 1) -> pd.DataFrame:
        """Add new samples (e.g. synthetic replenishment) to the last ``into_last_slices`` slices; return their rows.

        ``shard_of`` gives each new id its shard (a mapping id -> shard or a sequence aligned with ``ids``); without
        it each sample goes to the shard holding the fewest live samples of its label (then fewest overall, then
        lowest index), which keeps shards stratified. Within a shard, new samples are dealt round robin over the
        last slices. Adding only to late slices means only late slices need retraining.
        """
        ids = [str(i) for i in ids]
        labels = np.asarray(labels, dtype=np.int64)
        if len(ids) != len(labels):
            raise PlanError(f"{len(ids)} ids but {len(labels)} labels: they must be aligned")
        if not 1 <= into_last_slices <= self.num_slices:
            raise PlanError(f"into_last_slices must be in 1..{self.num_slices}, got {into_last_slices}")
        clash = set(ids) & set(self.table["id"])
        if clash or len(set(ids)) != len(ids):
            example = next(iter(clash)) if clash else pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
            raise PlanError(f"id {example!r} is already in the plan (or repeated): new samples need new ids")
        if shard_of is None:
            shards = self._balanced_shards(labels)
        elif isinstance(shard_of, Mapping):
            missing = [i for i in ids if i not in shard_of]
            if missing:
                raise PlanError(f"shard_of lacks {len(missing)} of the new ids, e.g. {missing[:3]}")
            shards = np.asarray([int(shard_of[i]) for i in ids], dtype=np.int64)
        else:
            shards = np.asarray(list(shard_of), dtype=np.int64)
            if len(shards) != len(ids):
                raise PlanError(f"shard_of has {len(shards)} entries for {len(ids)} new ids")
        if len(shards) and (shards.min() < 0 or shards.max() >= self.num_shards):
            raise PlanError(f"shard numbers must be in 0..{self.num_shards - 1}, got {sorted(set(shards.tolist()))}")
        slices = np.empty(len(ids), dtype=np.int64)
        first_slice = self.num_slices - into_last_slices
        for s in np.unique(shards):
            members = np.flatnonzero(shards == s)
            slices[members] = first_slice + np.arange(len(members)) % into_last_slices
        start = int(self.table["order"].max()) + 1 if len(self.table) else 0
        rows = pd.DataFrame({"id": ids, "label": labels, "shard": shards, "slice": slices,
                             "order": start + np.arange(len(ids)), "deleted": False})
        self.table = pd.concat([self.table, rows], ignore_index=True)
        return rows

    def _balanced_shards(self, labels: np.ndarray) -> np.ndarray:
        live = self.live()
        per_label = {int(label): np.bincount(live.loc[live["label"] == label, "shard"], minlength=self.num_shards)
                     for label in np.unique(labels)}
        totals = np.bincount(live["shard"], minlength=self.num_shards)
        out = np.empty(len(labels), dtype=np.int64)
        for j, label in enumerate(labels):
            counts = per_label[int(label)]
            s = min(range(self.num_shards), key=lambda i: (counts[i], totals[i], i))
            out[j] = s
            counts[s] += 1
            totals[s] += 1
        return out

    # queries -----------------------------------------------------------------------------------------------
    def live(self) -> pd.DataFrame:
        """Rows not forgotten."""
        return self.table[~self.table["deleted"]]

    def live_ids(self) -> list[str]:
        return self.live()["id"].tolist()

    def shard_sizes(self) -> list[int]:
        """Live samples per shard, index = shard."""
        return np.bincount(self.live()["shard"], minlength=self.num_shards).astype(int).tolist()

    def slice_ids(self, shard: int) -> list[list[str]]:
        """The live ids of each slice of ``shard`` in training order: ``R`` lists (some may be empty)."""
        rows = self.live()
        rows = rows[rows["shard"] == shard].sort_values("order")
        return [rows.loc[rows["slice"] == r, "id"].tolist() for r in range(self.num_slices)]

    def rows_of(self, ids: Iterable[str], allow_deleted: bool = False) -> pd.DataFrame:
        """Plan rows for ``ids`` in the order given. Unknown ids, repeated ids and (unless ``allow_deleted``)
        already forgotten ids raise ``PlanError``."""
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise PlanError("the request repeats ids: pass each id once")
        indexed = self.table.set_index("id")
        unknown = [i for i in ids if i not in indexed.index]
        if unknown:
            raise PlanError(f"{len(unknown)} ids were never trained on, e.g. {unknown[:3]}: check the id file")
        rows = indexed.loc[ids].reset_index()
        if not allow_deleted and rows["deleted"].any():
            gone = rows.loc[rows["deleted"], "id"].tolist()
            raise PlanError(f"{len(gone)} ids are already forgotten, e.g. {gone[:3]}: drop them from the request")
        return rows

    def mark_deleted(self, ids: Iterable[str]) -> None:
        """Flag ``ids`` as forgotten (validated by ``rows_of``)."""
        rows = self.rows_of(ids)
        self.table.loc[self.table["id"].isin(rows["id"]), "deleted"] = True

    # persistence -------------------------------------------------------------------------------------------
    def to_csv_text(self) -> str:
        return self.table.to_csv(index=False, lineterminator="\n")

    @classmethod
    def from_csv_text(cls, text: str, num_shards: int, num_slices: int, seed: int) -> "ShardPlan":
        table = pd.read_csv(io.StringIO(text), dtype={"id": str})
        return cls(table, num_shards, num_slices, seed)


def validate_counts(num_shards: int, num_slices: int) -> None:
    if int(num_shards) < 1:
        raise PlanError(f"num_shards (k) must be >= 1, got {num_shards}")
    if int(num_slices) < 1:
        raise PlanError(f"num_slices (R) must be >= 1, got {num_slices}")

"""Certifying that a record set is indistinguishable from non-members: an upper confidence bound under a tolerance.

A non-significant attack is no evidence of "no leak" (a small audit finds nothing either). A record set is
*certified* when, for every attack kept, the upper end of the two-sided ``confidence`` interval of

- its AUC (the audit's bootstrap percentile interval) is at most ``0.5 + max_auc_excess``, and
- its TPR at 1% FPR (Clopper-Pearson on the members above the threshold that lets 1% of the evaluation non-members
  through) is at most ``max_tpr_at_1pct_fpr``.

Every attack must pass on its own (an intersection-union test: no multiple-comparison correction, which would only
make passing easier). Before any bound is read, the audit must be able to resolve the tolerance: a score unrelated
to membership would give an AUC upper bound of about 0.5 + z * sqrt((n1 + n2 + 1) / (12 n1 n2)) and a TPR upper
bound of Clopper-Pearson(round(0.01 n1), n1); when either expected bound is above its tolerance the verdict is
``too_few`` with the number of evaluation members that would be needed, never a pass. An empty set holds nothing
and is ``empty``, which certifies vacuously (nothing to leak); a set with records of which none was evaluated is
``too_few``.

**Power with several attacks.** The rule takes the largest bound over k attacks, and the largest of k null bounds
is larger than one: with 1980 evaluation members and 6 attacks, a set exactly at chance passes the TPR rule less
than half the time (simulated with independent scores; ``tests/components/test_certify.py``). So a set that
is *not* certified is ``too_few`` (inconclusive, with the members needed), not ``not_certified``, unless the audit
is large enough that the largest of ``n_attacks`` independent null bounds stays under the tolerance at least half
the time (``resolvable(..., attacks=k)``: the median of that maximum, from the normal approximation of the AUC and
the beta-binomial law of the members above an empirical 1%-FPR cut). Independence is the conservative case (real
attacks are correlated, so their maximum grows more slowly). A set whose bounds pass is certified whatever the
power: the bounds hold at their confidence either way.

``Certificate`` keeps the figures (counts and the largest upper bounds), so a verdict can be recomputed later under
another tolerance (the promotion rule does, from a version's tags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import beta

from fairforget.components.config import ConfigBase
from fairforget.errors import ConfigError

CERTIFIED, NOT_CERTIFIED, TOO_FEW, EMPTY = "certified", "not_certified", "too_few", "empty"
CERTIFYING_FPR = 0.01
_MAX_SEARCH = 10**7


@dataclass(frozen=True)
class Tolerance(ConfigBase):
    """How much membership leakage a certified record set may show, at most, at ``confidence``."""

    max_auc_excess: float = 0.03
    max_tpr_at_1pct_fpr: float = 0.02
    confidence: float = 0.95

    def validate(self) -> None:
        if not 0.0 < self.max_auc_excess < 0.5:
            raise ConfigError(f"max_auc_excess must lie in (0, 0.5), got {self.max_auc_excess}: it is the AUC "
                              "above 0.5 a certified set may show at most")
        if not CERTIFYING_FPR < self.max_tpr_at_1pct_fpr < 1.0:
            raise ConfigError(f"max_tpr_at_1pct_fpr must lie in ({CERTIFYING_FPR}, 1), got "
                              f"{self.max_tpr_at_1pct_fpr}: at or below the FPR itself even chance fails it")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")

    @property
    def z(self) -> float:
        """The normal quantile of the upper end of a two-sided ``confidence`` interval (1.96 at 0.95)."""
        return NormalDist().inv_cdf(1.0 - (1.0 - self.confidence) / 2.0)


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Upper end of the two-sided Clopper-Pearson ``confidence`` interval of a binomial proportion (1.0 when
    every trial succeeded or there are none)."""
    if trials <= 0 or successes >= trials:
        return 1.0
    return float(beta.ppf(1.0 - (1.0 - confidence) / 2.0, successes + 1, trials - successes))


def _largest_of(attacks: int) -> float:
    """The normal quantile of the median of the largest of ``attacks`` independent standard normals (0 for one)."""
    return NormalDist().inv_cdf(0.5 ** (1.0 / max(1, attacks)))


def null_auc_upper(n_members: int, n_non_members: int, tolerance: Tolerance, attacks: int = 1) -> float:
    """The AUC upper bound a score unrelated to membership gives, on average, with these counts; with ``attacks``
    independent such scores, the median of the largest of their bounds."""
    if n_members < 1 or n_non_members < 1:
        return 1.0
    spread = math.sqrt((n_members + n_non_members + 1) / (12.0 * n_members * n_non_members))
    return 0.5 + (tolerance.z + _largest_of(attacks)) * spread


def null_tpr_upper(n_members: int, tolerance: Tolerance, n_non_members: int | None = None,
                   attacks: int = 1) -> float:
    """The TPR-at-1%-FPR upper bound a score unrelated to membership gives, on average, with ``n_members``; with
    ``attacks`` independent such scores (and ``n_non_members`` setting the cut), the median of the largest of their
    bounds. The members above an empirical 1%-FPR cut of a null score follow a beta-binomial law (the cut's true
    FPR is a beta order statistic of the non-members); the count used is round(0.01 n1) moved up by that law's
    standard deviation times the normal quantile of the median of the largest of k (none for one attack)."""
    expected = round(CERTIFYING_FPR * n_members)
    if attacks > 1 and n_non_members and n_members > 0:
        a = math.floor(CERTIFYING_FPR * n_non_members + 1e-9) + 1.0
        b = max(1.0, n_non_members + 1.0 - a)
        spread = math.sqrt(n_members * a * b * (a + b + n_members) / ((a + b) ** 2 * (a + b + 1.0)))
        expected += round(_largest_of(attacks) * spread)
    return clopper_pearson_upper(expected, n_members, tolerance.confidence)


def resolvable(n_members: int, n_non_members: int, tolerance: Tolerance, attacks: int = 1) -> bool:
    """True when an audit of these evaluation counts can certify at ``tolerance`` a set that is at chance: the
    (median) null bounds are under the tolerance, for the largest of ``attacks`` independent attacks."""
    return (n_non_members >= math.ceil(1.0 / CERTIFYING_FPR)
            and null_auc_upper(n_members, n_non_members, tolerance, attacks) <= 0.5 + tolerance.max_auc_excess
            and null_tpr_upper(n_members, tolerance, n_non_members, attacks) <= tolerance.max_tpr_at_1pct_fpr)


def members_needed(n_non_members: int, tolerance: Tolerance, attacks: int = 1) -> int | None:
    """The fewest evaluation members that ``resolvable`` accepts with ``n_non_members`` non-members; None when no
    number of members suffices (too few non-members: raise those first)."""
    if not resolvable(_MAX_SEARCH, n_non_members, tolerance, attacks):
        return None
    low, high = 1, _MAX_SEARCH
    while low < high:  # both conditions are monotone in the member count (up to rounding of k = 1% n)
        middle = (low + high) // 2
        if resolvable(middle, n_non_members, tolerance, attacks):
            high = middle
        else:
            low = middle + 1
    while not resolvable(low, n_non_members, tolerance, attacks):  # rounding can make the first hit non-monotone
        low += 1
    return low


def balanced_records_needed(tolerance: Tolerance, attacks: int = 1) -> int:
    """The fewest evaluation members, with as many evaluation non-members, that ``resolvable`` accepts."""
    low, high = 1, _MAX_SEARCH
    while low < high:
        middle = (low + high) // 2
        if resolvable(middle, middle, tolerance, attacks):
            high = middle
        else:
            low = middle + 1
    return low


def tpr_upper_at_fpr(is_member, scores, level: float = CERTIFYING_FPR, confidence: float = 0.95) -> float:
    """Clopper-Pearson upper bound of the TPR at the strictest cut whose FPR on these non-members is <= ``level``:
    the cut t is the smallest score such that at most floor(level * n_non_members) non-members score >= t (ties
    above it), and the members scoring >= t are the successes."""
    is_member = np.asarray(is_member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    members, non_members = scores[is_member], np.sort(scores[~is_member])[::-1]
    allowed = math.floor(level * len(non_members) + 1e-9)
    # the cut sits just above the (allowed + 1)-th highest non-member score: everything strictly above it passes
    cut = non_members[allowed] if allowed < len(non_members) else -np.inf
    passed = int((members > cut).sum())
    return clopper_pearson_upper(passed, len(members), confidence)


@dataclass(frozen=True)
class Certificate:
    """The figures a verdict is read from: evaluation counts, and over the attacks kept the largest AUC upper bound
    and the largest TPR-at-1%-FPR upper bound (``attack_auc`` / ``attack_tpr`` name them), and ``n_attacks`` the
    number of attacks the largest bounds were taken over (the power of the audit depends on it)."""

    n_members: int
    n_non_members: int
    auc_high: float
    tpr_high: float
    attack_auc: str = ""
    attack_tpr: str = ""
    n_attacks: int = 1
    leak_p_value: float = 1.0  # the exact test's smallest p-value over the attacks (``AuditReport.leak_p_value``)
    leak_level: float = 0.0  # the level it is detected at (``chance_alpha`` / attacks); 0: never detected

    def verdict(self, tolerance: Tolerance) -> str:
        """``empty`` (no records at all: nothing to leak), ``too_few``, ``certified`` or ``not_certified`` under
        ``tolerance``. A set that has records but none evaluated is ``too_few``, never ``empty``. Bounds within
        the tolerance certify; bounds above it say ``not_certified`` only when the audit had the power to certify a
        set at chance with its ``n_attacks`` attacks (``resolvable``), else ``too_few`` (inconclusive) unless the
        exact test detected the members (``leak_detected``): a detected leak is ``not_certified`` at any size."""
        if self.n_members == 0 and self.n_non_members == 0:
            return EMPTY
        if self.leak_detected:
            return NOT_CERTIFIED
        if not resolvable(self.n_members, self.n_non_members, tolerance):
            return TOO_FEW
        if self.bounds_within(tolerance):
            return CERTIFIED
        if not resolvable(self.n_members, self.n_non_members, tolerance, self.n_attacks):
            return TOO_FEW
        return NOT_CERTIFIED

    @property
    def leak_detected(self) -> bool:
        """True when the exact test detected the members (p-value at or under its level)."""
        return self.n_members > 0 and self.leak_p_value <= self.leak_level

    def bounds_within(self, tolerance: Tolerance) -> bool:
        """True when both largest upper bounds are within ``tolerance``."""
        return self.auc_high <= 0.5 + tolerance.max_auc_excess and self.tpr_high <= tolerance.max_tpr_at_1pct_fpr

    def members_needed(self, tolerance: Tolerance) -> int | None:
        """The evaluation members an audit with these non-members and attacks needs to resolve ``tolerance``."""
        return members_needed(self.n_non_members, tolerance, self.n_attacks)

    def certified(self, tolerance: Tolerance) -> bool:
        """True for ``certified`` and ``empty`` (a set with no records cannot give any away)."""
        return self.verdict(tolerance) in (CERTIFIED, EMPTY)

    def explain(self, tolerance: Tolerance) -> str:
        """One sentence: the verdict with the numbers behind it."""
        verdict = self.verdict(tolerance)
        if verdict == EMPTY:
            return "no records: nothing to leak"
        counts = f"{self.n_members} members vs {self.n_non_members} non-members"
        bounds = (f"AUC upper bound {self.auc_high:.4f} ({self.attack_auc}) vs {0.5 + tolerance.max_auc_excess:.3f}, "
                  f"TPR@1%FPR upper bound {self.tpr_high:.4f} ({self.attack_tpr}) vs "
                  f"{tolerance.max_tpr_at_1pct_fpr:.3f}")
        if verdict == TOO_FEW:
            needed = self.members_needed(tolerance)
            need = (f"at least {needed} evaluation members" if needed is not None else
                    f"more than {self.n_non_members} evaluation non-members")
            attacks = f" with {self.n_attacks} attacks" if self.n_attacks > 1 else ""
            seen = f"; {bounds}" if resolvable(self.n_members, self.n_non_members, tolerance) else ""
            return (f"too few records to certify ({counts}{seen}): resolving AUC <= "
                    f"{0.5 + tolerance.max_auc_excess:.3f} and TPR@1%FPR <= {tolerance.max_tpr_at_1pct_fpr:.3f}"
                    f"{attacks} needs {need}")
        if self.leak_detected:
            return (f"NOT certified, membership detected (exact test p {self.leak_p_value:.2g} <= "
                    f"{self.leak_level:.2g}): {bounds}; {counts}")
        return f"{'certified' if verdict == CERTIFIED else 'NOT certified'}: {bounds}; {counts}"

    def metrics(self, prefix: str, tolerance: Tolerance) -> dict[str, float]:
        """``<prefix>certified`` (1/0), ``auc_high``, ``tpr_at_1pct_fpr_high``, ``n_members`` and, when too few,
        ``members_needed``."""
        out = {f"{prefix}certified": float(self.certified(tolerance)), f"{prefix}auc_high": self.auc_high,
               f"{prefix}tpr_at_1pct_fpr_high": self.tpr_high, f"{prefix}n_members": float(self.n_members),
               f"{prefix}too_few": float(self.verdict(tolerance) == TOO_FEW)}
        if self.verdict(tolerance) == TOO_FEW:
            needed = self.members_needed(tolerance)
            out[f"{prefix}members_needed"] = float(needed) if needed is not None else float("inf")
        return out

    def tags(self, prefix: str) -> dict[str, str]:
        """The figures as model-version tags (``<prefix>n``, ``n_non_members``, ``auc_high``, ``tpr_high``,
        ``attacks``)."""
        return {f"{prefix}n": str(self.n_members), f"{prefix}n_non_members": str(self.n_non_members),
                f"{prefix}auc_high": f"{self.auc_high:.6f}", f"{prefix}tpr_high": f"{self.tpr_high:.6f}",
                f"{prefix}attacks": str(self.n_attacks), f"{prefix}leak_p": f"{self.leak_p_value:.6g}",
                f"{prefix}leak_level": f"{self.leak_level:.6g}"}

    @classmethod
    def from_tags(cls, tags, prefix: str) -> "Certificate | None":
        """The certificate ``tags`` wrote, or None when a figure is missing or unreadable (a version tagged before
        ``attacks`` was written reads as one attack: the power check is then the single-attack one)."""
        try:
            return cls(int(tags[f"{prefix}n"]), int(tags[f"{prefix}n_non_members"]),
                       float(tags[f"{prefix}auc_high"]), float(tags[f"{prefix}tpr_high"]),
                       n_attacks=int(tags.get(f"{prefix}attacks", 1)),
                       leak_p_value=float(tags.get(f"{prefix}leak_p", 1.0)),
                       leak_level=float(tags.get(f"{prefix}leak_level", 0.0)))
        except (KeyError, ValueError):
            return None


def certificate_over_attacks(n_members: int, n_non_members: int, auc_high: dict[str, float],
                             tpr_high: dict[str, float], p_values: dict[str, float],
                             alpha: float = 0.05) -> Certificate:
    """The certificate of one audited set from each attack's AUC upper bound, TPR-at-1%-FPR upper bound and exact-test
    p-value (attack -> value): the largest bounds, the smallest p-value, detected at level ``alpha`` / attacks."""
    by_auc, by_tpr = max(auc_high, key=auc_high.get), max(tpr_high, key=tpr_high.get)
    return Certificate(n_members, n_non_members, auc_high[by_auc], tpr_high[by_tpr], by_auc, by_tpr,
                       n_attacks=len(auc_high), leak_p_value=min(p_values.values(), default=1.0),
                       leak_level=alpha / len(auc_high))


EMPTY_CERTIFICATE = Certificate(0, 0, 0.5, 0.0)

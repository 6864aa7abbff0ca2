"""Candidate batches that span real differences: baselines' proposals, perturbations of them, random batches.

Shared by the oracle ceiling (its candidates), the designed lookup table (`lookup_table.batch_sampling:
designed`: records that cover what the agent will meet) and the reward-chain diagnostic (a diverse set
to measure fidelity on). Pure: ids and an explicit `numpy.random.Generator` in, lists of ids out.

Kinds of candidate: 'proposal' (a baseline's own batch), 'mixture' (a share of a proposal swapped for
random unlabeled images), 'cross' (a share of a proposal swapped for images of another proposal) and
'random' (k unlabeled images drawn uniformly).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # not imported at run time: mgral_core.strategies imports this module (the oracle)
    from mgral_core.strategies.base import PoolView, Strategy

KINDS = ("proposal", "mixture", "cross", "random")


@dataclass
class Candidate:
    """One candidate batch: kind is one of KINDS; source names the proposal(s) it comes from.

    Attributes:
        kind, source: see the module docstring; a cross's source is 'base+donor', a random batch's its index.
        ids: the k image ids, distinct.
        swap_fraction: share of the base proposal replaced (mixtures and crosses), else None.
        value: filled in by whoever scores the batch.
        same_as: label of an earlier candidate with the same set of ids (scored once, under that one).
    """

    kind: str
    source: str
    ids: list[str]
    swap_fraction: float | None = None
    value: float | None = None
    same_as: str | None = None

    @property
    def label(self) -> str:
        return self.source if self.kind == "proposal" else f"{self.kind}:{self.source}"


def proposal_batches(pool: PoolView, k: int, rng: np.random.Generator, proposers: Mapping[str, Strategy]
                     ) -> list[Candidate]:
    """Each proposer's batch, each called with a copy of `rng`: exactly what that baseline selects with it."""
    return [Candidate("proposal", name, [str(i) for i in strategy(pool, k, copy.deepcopy(rng))])
            for name, strategy in proposers.items()]


def swap_in(base: Sequence[str], donors: Sequence[str], n_swap: int, rng: np.random.Generator) -> list[str]:
    """`base` with `n_swap` of its ids (drawn by `rng`) replaced by `n_swap` ids drawn from `donors`.

    Donors already in `base` are skipped; with fewer donors left than `n_swap`, that many are swapped.
    The kept ids stay in their order, the new ones follow. Draws the dropped ids first, then the donors.
    """
    keep = set(base)
    outside = np.array([d for d in donors if d not in keep])
    n_swap = min(n_swap, len(outside), len(base))
    if n_swap <= 0:
        return list(base)
    dropped = set(rng.choice(np.asarray(base), size=n_swap, replace=False).tolist())
    added = [str(d) for d in rng.choice(outside, size=n_swap, replace=False)]
    return [i for i in base if i not in dropped] + added


def random_batch(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k distinct unlabeled ids drawn uniformly."""
    return [str(pool.unlabeled_ids[j]) for j in rng.choice(len(pool.unlabeled_ids), size=k, replace=False)]


def n_swapped(k: int, fraction: float) -> int:
    """How many of k images a perturbation replaces: round(fraction k), at least 1 and at most k."""
    return min(k, max(1, int(round(fraction * k))))


def mark_duplicates(candidates: Sequence[Candidate]) -> None:
    """Set `same_as` on every candidate whose set of ids equals an earlier candidate's (in place)."""
    seen: dict[frozenset, str] = {}
    for candidate in candidates:
        key = frozenset(candidate.ids)
        if key in seen:
            candidate.same_as = seen[key]
        else:
            seen[key] = candidate.label


def strategy_diverse_batches(pool: PoolView, k: int, rng: np.random.Generator, proposers: Mapping[str, Strategy],
                             n: int, mix_share: float, swap_fraction: float) -> list[Candidate]:
    """The oracle ceiling's N candidates: every proposal, then mixtures, then random batches.

    Of the `n - len(proposers)` batches after the proposals, round(mix_share x that) are mixtures
    (`swap_fraction` of a proposal swapped for random unlabeled images, cycling through the proposals in
    order) and the rest random batches; both come from one child stream of `rng`. Duplicates are
    marked `same_as`, not removed.
    """
    out = proposal_batches(pool, k, rng, proposers)
    proposals = list(out)
    rest = n - len(out)
    n_mix = int(round(mix_share * rest)) if proposals else 0
    draw = rng.spawn(1)[0]
    swap = n_swapped(k, swap_fraction)
    every_id = [str(i) for i in pool.unlabeled_ids]
    for i in range(n_mix):
        base = proposals[i % len(proposals)]
        out.append(Candidate("mixture", base.source, swap_in(base.ids, every_id, swap, draw), swap_fraction))
    for i in range(rest - n_mix):
        out.append(Candidate("random", str(i), random_batch(pool, k, draw)))
    mark_duplicates(out)
    return out


@dataclass(frozen=True)
class DesignSettings:
    """Shares of a designed set of n batches (`designed_batches`).

    Attributes:
        random_share: share of the n batches that are random (rounded; at least one when > 0).
        cross_share: of the perturbations, the share that swap in another proposal's images (the
            rest swap in random images); crosses need two distinct proposals.
        swap_fractions: shares of a proposal a perturbation replaces, used in turn.
    """

    random_share: float = 0.25
    cross_share: float = 0.5
    swap_fractions: tuple[float, ...] = field(default=(0.25, 0.5, 0.75))

    def __post_init__(self) -> None:
        if not 0.0 <= self.random_share <= 1.0:
            raise ValueError(f"random_share must be in [0, 1], got {self.random_share}")
        if not 0.0 <= self.cross_share <= 1.0:
            raise ValueError(f"cross_share must be in [0, 1], got {self.cross_share}")
        if not self.swap_fractions or not all(0.0 < f < 1.0 for f in self.swap_fractions):
            raise ValueError(f"swap_fractions must be a non-empty list of values in (0, 1), got {self.swap_fractions}")


def design_counts(n: int, n_proposals: int, settings: DesignSettings) -> dict[str, int]:
    """How many batches of each kind a design of n holds: {'proposal', 'mixture', 'cross', 'random'}.

    Random batches first (round(random_share n), at least one if the share is > 0), then as many
    distinct proposals as fit, then perturbations split by cross_share (no cross with < 2 proposals).
    """
    n_random = min(n, max(1 if settings.random_share > 0 else 0, int(round(settings.random_share * n))))
    n_prop = min(n_proposals, n - n_random)
    if n_prop == 0:  # nothing to perturb: the rest are random too
        return {"proposal": 0, "mixture": 0, "cross": 0, "random": n}
    rest = n - n_random - n_prop
    n_cross = int(round(settings.cross_share * rest)) if n_prop >= 2 else 0
    return {"proposal": n_prop, "mixture": rest - n_cross, "cross": n_cross, "random": n_random}


def designed_batches(pool: PoolView, k: int, n: int, rng: np.random.Generator, proposers: Mapping[str, Strategy],
                     settings: DesignSettings = DesignSettings(), max_redraws: int = 20) -> list[Candidate]:
    """n distinct batches of k that cover the proposals, their perturbations and random batches.

    Order: distinct proposals (a proposal equal to an earlier one is dropped; one that does not fit in
    n is left out, in proposer order), mixtures, crosses, random batches, with the counts of
    `design_counts` over the distinct proposals. Perturbation i takes proposal i mod P as its base and
    `swap_fractions[i mod len]` as its share; a cross's donor is the next proposal in turn (never the
    base). A perturbation or random batch equal to an earlier batch is drawn again (up to `max_redraws`
    times; then kept, marked `same_as` — only a pool barely larger than k gets there).
    Depends only on the inputs and the state of `rng`.
    """
    if k > len(pool.unlabeled_ids):
        raise ValueError(f"batch size {k} exceeds the {len(pool.unlabeled_ids)} candidates")
    if n < 1:
        raise ValueError(f"need at least one batch, got n={n}")
    seen: set[frozenset] = set()
    proposals = []
    for candidate in proposal_batches(pool, k, rng, proposers):
        key = frozenset(candidate.ids)
        if key not in seen:
            seen.add(key)
            proposals.append(candidate)
    counts = design_counts(n, len(proposals), settings)
    proposals = proposals[:counts["proposal"]]
    out = list(proposals)
    draw = rng.spawn(1)[0]
    every_id = [str(i) for i in pool.unlabeled_ids]
    fractions = settings.swap_fractions

    def add_distinct(make) -> None:
        for _ in range(max_redraws):
            candidate = make()
            if frozenset(candidate.ids) not in seen:
                break
        seen.add(frozenset(candidate.ids))
        out.append(candidate)

    for i in range(counts["mixture"]):
        base, f = proposals[i % len(proposals)], fractions[i % len(fractions)]
        add_distinct(lambda: Candidate("mixture", base.source, swap_in(base.ids, every_id, n_swapped(k, f), draw), f))
    for i in range(counts["cross"]):
        p = len(proposals)
        base = proposals[i % p]
        donor = proposals[(i % p + 1 + (i // p) % (p - 1)) % p]  # every other proposal in turn, never the base
        f = fractions[i % len(fractions)]
        add_distinct(lambda: Candidate("cross", f"{base.source}+{donor.source}",
                                       swap_in(base.ids, donor.ids, n_swapped(k, f), draw), f))
    for i in range(counts["random"]):
        add_distinct(lambda: Candidate("random", str(i), random_batch(pool, k, draw)))
    mark_duplicates(out)
    return out

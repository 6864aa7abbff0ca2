"""`oracle_best_of_n`: an upper-bound diagnostic, not a strategy a user could run. It scores candidate
batches with the oracle's true labels and keeps the best one (the "best of strategy-proposed batches"
ceiling of BoSS, arXiv 2603.13109).

The candidates are every proposing baseline's batch, random batches, and mixtures (part of a proposal
swapped for random images). Whatever beats them all shows how much headroom selection has at this
regime. It reads hidden labels, so it exists only in simulation and every report marks it as a ceiling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mgral_core.batch_design import Candidate, strategy_diverse_batches
from mgral_core.strategies.base import PoolView, SelectionContext, Strategy
from mgral_core.strategies.ranking import check_budget

OracleScorer = Callable[[Sequence[Sequence[str]]], list[float]]
"""Maps candidate batches B_1..B_N to the values of L ∪ B_i trained with the oracle's true labels of B_i."""


@dataclass(frozen=True)
class OracleSettings:
    """How many candidate batches the ceiling scores per cycle, and of which kinds.

    Attributes:
        candidates: N, every batch scored: the proposals first, then random batches and mixtures.
        mix_share: share of the N - len(proposals) remaining batches that are mixtures (rounded);
            the rest are random batches.
        swap_fraction: share of a proposal's images a mixture replaces by random unlabeled images
            (rounded, at least one).
        proposals: names of the baselines whose batches are candidates, in that order; None means
            every registered baseline.
    """

    candidates: int = 16
    mix_share: float = 0.5
    swap_fraction: float = 0.5
    proposals: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n_proposals = 0 if self.proposals is None else len(self.proposals)
        if self.candidates < max(2, n_proposals):
            raise ValueError(f"candidates must be >= 2 and >= the {n_proposals} proposals, got {self.candidates}")
        if not 0.0 <= self.mix_share <= 1.0:
            raise ValueError(f"mix_share must be in [0, 1], got {self.mix_share}")
        if not 0.0 < self.swap_fraction < 1.0:
            raise ValueError(f"swap_fraction must be in (0, 1), got {self.swap_fraction}")
        if self.mix_share > 0 and self.proposals is not None and not self.proposals:
            raise ValueError("mixtures need proposals to mix: give proposals or set mix_share to 0")


@dataclass
class OracleBestOfN:
    """The ceiling as a strategy: strategy(pool, k, rng) -> the best-scoring candidate's ids.

    Args:
        scorer: true-label values of candidate batches (see `OracleScorer`); the only oracle reader.
        proposers: {name: baseline strategy} whose batches are proposals.
        settings: candidate counts and mixing (see `OracleSettings`).

    After a call, `last_candidates` holds every candidate with its value and `last_choice` the index of
    the chosen one (ties go to the earliest candidate). Writes nothing.
    """

    scorer: OracleScorer
    proposers: dict[str, Strategy]
    settings: OracleSettings = field(default_factory=OracleSettings)
    last_candidates: list[Candidate] = field(default_factory=list)
    last_choice: int | None = None

    needs_lookup_table = False
    reads_oracle = True  # simulation only; the leakage test exempts this strategy by name

    def __post_init__(self) -> None:
        if len(self.proposers) > self.settings.candidates:
            raise ValueError(f"{len(self.proposers)} proposals do not fit in {self.settings.candidates} candidates")

    @classmethod
    def from_context(cls, context: SelectionContext) -> OracleBestOfN:
        """Built from the context's oracle scorer and settings; proposals default to every baseline.

        Raises:
            ValueError: when the context has no oracle scorer (a real project has no oracle).
        """
        from mgral_core.strategies import BASELINE_STRATEGIES

        if context.oracle_scorer is None:
            raise ValueError("strategy 'oracle_best_of_n' is a simulation-only upper bound: it trains with the "
                             "oracle's hidden labels, and this selection has no oracle to read")
        settings = context.oracle if context.oracle is not None else OracleSettings()
        if settings.proposals is None:
            settings = replace(settings, proposals=tuple(BASELINE_STRATEGIES))
        unknown = [name for name in settings.proposals if name not in BASELINE_STRATEGIES]
        if unknown:
            raise ValueError(f"oracle proposals must be baselines ({', '.join(BASELINE_STRATEGIES)}), got {unknown}")
        return cls(context.oracle_scorer, {name: BASELINE_STRATEGIES[name] for name in settings.proposals}, settings)

    def candidate_batches(self, pool: PoolView, k: int, rng: np.random.Generator) -> list[Candidate]:
        """The N candidates of this call (unscored): proposals, then mixtures, then random batches.

        Each proposer is called with a copy of `rng`, so a proposal is exactly the batch that baseline
        would select on this pool with this rng; mixtures and random batches come from a child stream
        of `rng`, mixtures cycling through the proposals in order. A candidate with the same set of
        ids as an earlier one is marked `same_as` and not scored again.
        """
        s = self.settings
        return strategy_diverse_batches(pool, k, rng, self.proposers, s.candidates, s.mix_share, s.swap_fraction)

    def __call__(self, pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
        check_budget(pool, k)
        self.last_candidates, self.last_choice = [], None
        if k == 0:
            return []
        candidates = self.candidate_batches(pool, k, rng)
        scored = [c for c in candidates if c.same_as is None]
        values = self.scorer([c.ids for c in scored])
        if len(values) != len(scored) or not all(np.isfinite(values)):
            raise ValueError(f"oracle scorer returned {values!r} for {len(scored)} candidate batches")
        by_label = {}
        for candidate, value in zip(scored, values):
            candidate.value = float(value)
            by_label[candidate.label] = candidate.value
        for candidate in candidates:
            if candidate.same_as is not None:
                candidate.value = by_label[candidate.same_as]
        self.last_candidates = candidates
        self.last_choice = int(np.argmax([c.value for c in candidates]))
        return list(candidates[self.last_choice].ids)


def ceiling_summary(candidates: Sequence[Candidate], choice: int) -> dict:
    """Figures of one ceiling selection: the chosen value and kind, and the best / mean of each kind.

    `oracle_gap_vs_random` is the chosen value minus the mean of the random candidates (None when the
    call drew none): the head-proxy estimate of the headroom at this cycle.
    """
    values = {kind: [c.value for c in candidates if c.kind == kind] for kind in ("proposal", "random", "mixture")}
    chosen = candidates[choice]
    out = {"oracle_candidates": len(candidates), "oracle_chosen_value": chosen.value,
           "oracle_chosen_kind": chosen.kind, "oracle_chosen_source": chosen.source}
    for kind, vals in values.items():
        out[f"oracle_{kind}_best"] = max(vals) if vals else None
        out[f"oracle_{kind}_mean"] = float(np.mean(vals)) if vals else None
    out["oracle_gap_vs_random"] = chosen.value - out["oracle_random_mean"] if values["random"] else None
    return out

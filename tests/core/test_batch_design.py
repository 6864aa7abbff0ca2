"""The designed record batches: what kinds, how many of each, drawn from where, and reproducible."""

import numpy as np
import pytest

from mgral_core.batch_design import DesignSettings, design_counts, designed_batches, n_swapped
from mgral_core.strategies import BASELINE_STRATEGIES
from tests.core.test_strategies_contract import make_pool

PROPOSERS = {name: BASELINE_STRATEGIES[name] for name in ("entropy_sum", "coreset", "typiclust", "cdal")}


def design(n=20, k=10, seed=0, settings=DesignSettings(), pool=None, proposers=PROPOSERS):
    pool = make_pool(n_unlabeled=60) if pool is None else pool
    return pool, designed_batches(pool, k, n, np.random.default_rng(seed), proposers, settings)


def test_kinds_come_in_the_designed_shares_and_order():
    _, batches = design(n=20)
    kinds = [b.kind for b in batches]
    # 5 random (0.25 x 20), the 4 proposals, then 11 perturbations: 6 crosses (0.5 x 11, rounded half to even) and 5 mixtures
    assert kinds == ["proposal"] * 4 + ["mixture"] * 5 + ["cross"] * 6 + ["random"] * 5
    assert design_counts(20, 4, DesignSettings()) == {"proposal": 4, "mixture": 5, "cross": 6, "random": 5}
    assert design_counts(3, 9, DesignSettings()) == {"proposal": 2, "mixture": 0, "cross": 0, "random": 1}
    assert design_counts(6, 1, DesignSettings()) == {"proposal": 1, "mixture": 3, "cross": 0, "random": 2}
    assert design_counts(4, 0, DesignSettings()) == {"proposal": 0, "mixture": 0, "cross": 0, "random": 4}
    only_random = DesignSettings(random_share=1.0)
    assert [b.kind for b in design(n=5, settings=only_random)[1]] == ["random"] * 5


def test_batches_are_k_distinct_candidates_and_distinct_from_each_other():
    pool, batches = design(n=24, k=12)
    unlabeled = set(pool.unlabeled_ids.tolist())
    assert len(batches) == 24
    assert all(len(b.ids) == 12 and len(set(b.ids)) == 12 and set(b.ids) <= unlabeled for b in batches)
    assert len({frozenset(b.ids) for b in batches}) == 24 and all(b.same_as is None for b in batches)


def test_proposals_are_the_baselines_own_batches_and_perturbations_swap_the_stated_share():
    pool, batches = design(n=20, k=12)
    proposals = {b.source: b.ids for b in batches if b.kind == "proposal"}
    for name, strategy in PROPOSERS.items():  # each proposer sees a copy of the rng, as when it selects
        assert proposals[name] == [str(i) for i in strategy(pool, 12, np.random.default_rng(0))]
    fractions = DesignSettings().swap_fractions
    mixtures = [b for b in batches if b.kind == "mixture"]
    for i, mixture in enumerate(mixtures):  # base proposal i mod P, share i mod len(fractions)
        base = list(PROPOSERS)[i % len(PROPOSERS)]
        assert mixture.source == base and mixture.swap_fraction == fractions[i % len(fractions)]
        assert len(set(mixture.ids) - set(proposals[base])) == n_swapped(12, mixture.swap_fraction)
    for cross in (b for b in batches if b.kind == "cross"):  # the swapped-in images come from the donor
        base, donor = cross.source.split("+")
        assert base != donor
        added = set(cross.ids) - set(proposals[base])
        assert added and added <= set(proposals[donor]) and len(added) <= n_swapped(12, cross.swap_fraction)


def test_same_seed_same_design_and_another_seed_another():
    _, a = design(seed=3)
    _, b = design(seed=3)
    _, c = design(seed=4)
    assert [x.ids for x in a] == [x.ids for x in b]
    assert [x.ids for x in a if x.kind != "proposal"] != [x.ids for x in c if x.kind != "proposal"]


def test_identical_proposals_are_kept_once():
    twins = {"entropy_sum": PROPOSERS["entropy_sum"], "entropy_sum_again": PROPOSERS["entropy_sum"],
             "coreset": PROPOSERS["coreset"]}
    _, batches = design(n=8, proposers=twins)
    assert [b.source for b in batches if b.kind == "proposal"] == ["entropy_sum", "coreset"]
    assert len(batches) == 8 and len({frozenset(b.ids) for b in batches}) == 8


def test_bad_designs_are_refused():
    with pytest.raises(ValueError, match="batch size 61 exceeds the 60 candidates"):
        design(k=61)
    with pytest.raises(ValueError, match="swap_fractions"):
        DesignSettings(swap_fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="random_share"):
        DesignSettings(random_share=1.5)

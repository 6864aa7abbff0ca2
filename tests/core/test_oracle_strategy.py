"""The oracle ceiling in the pure core: which candidates it draws, that it keeps the best-scoring one,
and that it refuses to build without an oracle."""

import numpy as np
import pytest

from mgral_core.strategies import (
    BASELINE_STRATEGIES,
    display_name,
    get_strategy,
    oracle_readers,
    reads_oracle,
)
from mgral_core.strategies.base import PoolView, SelectionContext
from mgral_core.strategies.oracle import OracleBestOfN, OracleSettings, ceiling_summary
from tests.core.test_strategies_contract import fake_oracle_scorer, make_pool


def build(scorer=fake_oracle_scorer, **settings):
    return get_strategy("oracle_best_of_n", SelectionContext(oracle_scorer=scorer, oracle=OracleSettings(**settings)))


def test_candidates_are_proposals_mixtures_and_random_batches():
    pool = make_pool()
    ceiling = build(candidates=13, mix_share=0.5, swap_fraction=0.3, proposals=("coreset", "typiclust", "ebal"))
    candidates = ceiling.candidate_batches(pool, 10, np.random.default_rng(0))
    assert [c.kind for c in candidates] == ["proposal"] * 3 + ["mixture"] * 5 + ["random"] * 5
    proposals = {c.source: c.ids for c in candidates[:3]}
    for name in ("coreset", "typiclust", "ebal"):  # what each baseline itself selects with this rng
        assert proposals[name] == BASELINE_STRATEGIES[name](pool, 10, np.random.default_rng(0))
    for mixture, source in zip(candidates[3:8], ["coreset", "typiclust", "ebal", "coreset", "typiclust"]):
        assert mixture.source == source and len(set(mixture.ids)) == 10
        assert len(set(mixture.ids) & set(proposals[source])) == 7  # 3 of 10 swapped for images outside it
    unlabeled = set(pool.unlabeled_ids.tolist())
    assert all(len(set(c.ids)) == 10 and set(c.ids) <= unlabeled for c in candidates)


def test_every_baseline_proposes_by_default():
    assert build(candidates=16).settings.proposals == tuple(BASELINE_STRATEGIES)
    assert len(BASELINE_STRATEGIES) < 16  # the default leaves room for random batches and mixtures


def test_keeps_the_best_scoring_candidate():
    pool = make_pool()
    wanted = set(pool.unlabeled_ids[:6].tolist())

    def scorer(batches):  # the true-label value: how many of the six "informative" images a batch holds
        return [float(len(wanted & set(b))) for b in batches]

    ceiling = build(scorer, candidates=12, proposals=("random", "coreset"))
    ids = ceiling(pool, 8, np.random.default_rng(1))
    values = [c.value for c in ceiling.last_candidates]
    assert len(values) == 12 and ceiling.last_choice == int(np.argmax(values))
    assert ids == ceiling.last_candidates[ceiling.last_choice].ids
    assert scorer([ids])[0] == max(values)
    summary = ceiling_summary(ceiling.last_candidates, ceiling.last_choice)
    assert summary["oracle_chosen_value"] == max(values) and summary["oracle_candidates"] == 12
    random_mean = np.mean([c.value for c in ceiling.last_candidates if c.kind == "random"])
    assert summary["oracle_gap_vs_random"] == pytest.approx(max(values) - random_mean)


def test_identical_candidates_are_scored_once():
    pool = make_pool(n_unlabeled=10)
    calls = []

    def scorer(batches):
        calls.append(len(batches))
        return [0.5] * len(batches)

    ceiling = build(scorer, candidates=6, proposals=("random", "coreset"))
    assert sorted(ceiling(pool, 10, np.random.default_rng(0))) == sorted(pool.unlabeled_ids.tolist())
    assert calls == [1]  # budget = pool: every candidate is the whole pool
    assert [c.same_as for c in ceiling.last_candidates] == [None] + ["random"] * 5
    assert all(c.value == 0.5 for c in ceiling.last_candidates)


def test_bad_scorer_output_and_settings_are_refused():
    pool = make_pool()
    with pytest.raises(ValueError, match="oracle scorer returned"):
        build(lambda batches: [0.1], candidates=4, proposals=("random",))(pool, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="oracle scorer returned"):
        build(lambda batches: [float("nan")] * len(batches), candidates=2, proposals=("random",))(
            pool, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="candidates must be >= 2 and >= the 3 proposals, got 2"):
        OracleSettings(candidates=2, proposals=("random", "coreset", "cdal"))
    with pytest.raises(ValueError, match="mix_share must be in"):
        OracleSettings(mix_share=1.5)
    with pytest.raises(ValueError, match="swap_fraction must be in"):
        OracleSettings(swap_fraction=1.0)
    with pytest.raises(ValueError, match="mixtures need proposals"):
        OracleSettings(proposals=())
    n = len(BASELINE_STRATEGIES)
    with pytest.raises(ValueError, match=f"candidates must be >= 2 and >= the {n} proposals, got 4"):
        build(candidates=4)  # the default proposals: every baseline
    with pytest.raises(ValueError, match=f"{n} proposals do not fit in 4 candidates"):
        OracleBestOfN(fake_oracle_scorer, dict(BASELINE_STRATEGIES), OracleSettings(candidates=4))
    with pytest.raises(ValueError, match="oracle proposals must be baselines.*'mgral'"):
        build(candidates=4, proposals=("mgral",))


def test_only_the_ceiling_reads_the_oracle_and_reports_say_so():
    assert oracle_readers() == ("oracle_best_of_n",) and reads_oracle("oracle_best_of_n")
    assert not any(reads_oracle(name) for name in BASELINE_STRATEGIES) and not reads_oracle("mgral")
    assert display_name("oracle_best_of_n") == "oracle_best_of_n (ceiling)"
    assert display_name("oracle_best_of_n@oracle.candidates=8") == "oracle_best_of_n@oracle.candidates=8 (ceiling)"
    assert display_name("oracle_best_of_n (ceiling)") == "oracle_best_of_n (ceiling)"
    assert display_name("mgral@agent.shortlist=400") == "mgral@agent.shortlist=400"
    assert display_name("retired_strategy") == "retired_strategy"
    assert isinstance(build(), OracleBestOfN) and OracleBestOfN.reads_oracle


def test_does_not_read_anything_but_the_scorer():
    """The core strategy sees only the pool view (which has no labels in it) and the scorer it is given,
    and calls the scorer once per selection with every distinct candidate."""
    pool = make_pool()
    seen = []
    ceiling = build(lambda batches: seen.extend(batches) or [float(i) for i in range(len(batches))],
                    candidates=10, proposals=("random", "typiclust"))
    ids = ceiling(pool, 6, np.random.default_rng(0))
    assert ids == list(seen[-1]) and len(seen) == 10  # the last candidate scored highest here
    assert PoolView.__dataclass_fields__.keys() == {"unlabeled_ids", "unlabeled_embeddings", "labeled_ids",
                                                    "labeled_embeddings", "detections", "num_classes"}

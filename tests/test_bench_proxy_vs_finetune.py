"""bench/proxy_vs_finetune.py's within-seed figures on hand-made rows (the script itself runs on a benchmark)."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import load_bench_script


@pytest.fixture(scope="module")
def script():
    return load_bench_script("proxy_vs_finetune")


def rows() -> pd.DataFrame:
    # seed 0: the pseudo value falls with the count while the fine-tune rises with it; seed 1 shifted by +0.1
    base = pd.DataFrame({"run": list("abcd"), "pseudo_objects": [100, 200, 300, 400],
                         "finetune_test": [0.10, 0.12, 0.13, 0.15],
                         "proxy_pseudo": [0.160, 0.151, 0.142, 0.129]})
    return pd.concat([base.assign(seed=0), base.assign(seed=1, finetune_test=base["finetune_test"] + 0.1,
                                                        proxy_pseudo=base["proxy_pseudo"] + 0.1)], ignore_index=True)


def test_pair_agreement_counts_within_seed_pairs_only(script):
    frame = rows()
    agreement, pairs = script.pair_agreement(frame, "proxy_pseudo")
    assert pairs == 12 and agreement == 0.0  # every within-seed pair ordered backwards; no cross-seed pair
    assert script.pair_agreement(frame, "pseudo_objects") == (1.0, 12)


def test_count_residual_is_orthogonal_to_the_centred_count(script):
    frame = script.with_count_residual(rows())
    centred = script.seed_centred(frame, "pseudo_objects").to_numpy(float)
    residual = frame["proxy_pseudo_count_residual"].to_numpy(float)
    assert abs(centred @ residual) < 1e-9 and np.abs(residual).max() < 0.002  # nearly all of it was the count
    assert np.allclose(residual[:4], residual[4:])  # the seed offset is gone


def test_proxy_overrides_read_yaml_values_and_refuse_other_sections(script):
    assert script.proxy_overrides(["lookup_table.pseudo_labels=sampled", "lookup_table.pseudo_conf=0.25"]) == {
        "lookup_table.pseudo_labels": "sampled", "lookup_table.pseudo_conf": 0.25}
    for bad in ("detector.epochs=3", "lookup_table.pseudo_conf", "lookup_table.a.b=1"):
        with pytest.raises(SystemExit, match="lookup_table.KEY=VALUE"):
            script.proxy_overrides([bad])


def test_benchmark_seed_finds_the_shared_detector_and_each_strategys_first_batch(script, tmp_path):
    import json

    seed_dir = tmp_path / "runs" / "seed_3"
    weights = seed_dir / "base" / "cycles" / "cycle_001" / "detector" / "best.pt"
    with pytest.raises(FileNotFoundError, match="no first detector for seed_3"):
        script.benchmark_seed(seed_dir)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    for run, ids in (("random", ["a", "b"]), ("ebal", ["c"]), ("unfinished", None), (".tmp_x", ["z"])):
        cycle = seed_dir / run / "cycles" / "cycle_001"
        cycle.mkdir(parents=True)
        if ids is not None:
            (cycle / "selection.json").write_text(json.dumps({"ids": ids}))
    seed = script.benchmark_seed(seed_dir)
    assert seed["weights"] == weights and seed["inference"].name == "pool_inference.npz"
    assert [(run.name, ids) for run, ids in seed["runs"]] == [("ebal", ["c"]), ("random", ["a", "b"])]


def test_true_label_records_are_trained_once_per_head_setting(script, tmp_path):
    from mgral_workspace.config import Params

    calls = []

    def record():
        calls.append(1)
        return {"value": 0.2 + len(calls) / 1000}

    params = Params()
    assert script.cached_truth(tmp_path, params, "ebal", record)["value"] == 0.201
    variant = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
        update={"pseudo_conf": 0.25, "pseudo_ignore": 0.0})})
    assert script.cached_truth(tmp_path, variant, "ebal", record)["value"] == 0.201  # pseudo settings: reused
    longer = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(update={"head_epochs": 20})})
    assert script.cached_truth(tmp_path, longer, "ebal", record)["value"] == 0.202  # another head: trained again
    assert len(calls) == 2


def test_the_real_fine_tune_is_the_mean_of_the_cell_and_its_repeats(script, tmp_path):
    run = tmp_path / "random"
    (run / "cells").mkdir(parents=True)
    (run / "cells" / "cycle_002.json").write_text(json.dumps({"map50_95": 0.20}))
    assert script.finetune_mean(run) == 0.20 and script.repeats_of(run) == []
    for r, value in ((1, 0.23), (2, 0.26)):
        (run / "cells" / f"cycle_002_repeat_{r}.json").write_text(json.dumps({"map50_95": value}))
    (run / "cells" / "cycle_003.json").write_text(json.dumps({"map50_95": 0.9}))  # another cycle: not a repeat
    assert script.finetune_mean(run) == pytest.approx(0.23) and len(script.repeats_of(run)) == 2

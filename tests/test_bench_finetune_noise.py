"""bench/finetune_noise.py's arithmetic on hand-made refits and cells (the script itself runs on a benchmark)."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import load_bench_script


@pytest.fixture(scope="module")
def script():
    return load_bench_script("finetune_noise")


def test_noise_figures_split_the_paired_spread_into_training_noise_and_the_rest(script):
    # two cells, each refitted with 3 training seeds: within-cell sd 0.01 in both
    refits = pd.DataFrame({"seed": [0] * 6, "strategy": ["random"] * 3 + ["cdal"] * 3,
                           "test_map50_95": [0.17, 0.18, 0.19, 0.20, 0.21, 0.22]})
    # 4 seeds of two strategies at 200 labeled; cdal - random = 0.02, 0.00, 0.04, 0.02 (sd 0.01633)
    random_200, cdal_200 = [0.18, 0.19, 0.17, 0.18], [0.20, 0.19, 0.21, 0.20]
    cells = pd.DataFrame({"strategy": ["random"] * 4 + ["cdal"] * 4, "seed": list(range(4)) * 2,
                          "labeled": [200] * 8, "map50_95": random_200 + cdal_200})
    f = script.noise_figures(refits, cells, [1, 4])
    assert f["training_noise_sd"] == pytest.approx(0.01) and f["cells_with_repeats"] == 2 and f["seeds"] == 4
    observed = np.std([0.01, 0.0, 0.02, 0.01], ddof=1)  # AUC differences: half the 200-label ones
    assert f["observed_paired_auc_sd"] == pytest.approx(observed)
    noise_var = 2 * 0.005 ** 2  # two cells' training noise, halved into AUC
    assert f["training_share_of_paired_variance"] == pytest.approx(noise_var / observed ** 2)
    assert f["by_repeats"][1]["paired_auc_sd"] == pytest.approx(observed)  # one fine-tune: what was measured
    four = np.sqrt(observed ** 2 - noise_var + noise_var / 4)
    assert f["by_repeats"][4]["paired_auc_sd"] == pytest.approx(four)
    assert f["by_repeats"][4]["mdd"] == pytest.approx(np.sqrt(7.85 * four ** 2 / 4))

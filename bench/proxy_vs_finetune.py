"""Does the head proxy rank batches as the real fine-tune does? (issue 15: the link before chain link b)

Every yardstick of the reward chain (fidelity, link e, the oracle ceiling) is the head proxy's value of a
batch with the oracle's true labels: the cycle detector's last layer retrained on cached features of
L ∪ B, scored on val. The benchmark's outcome is something else: a warm-started fine-tune of the whole
detector on L ∪ B, scored on test. This bench takes a finished `mgral benchmark --out` folder and, for
every seed, scores each strategy's first batch with the head proxy, true labels and pseudo-labels,
from that seed's shared first detector (`runs/seed_<s>/base`), and sets those values beside the test
mAP50-95 the real fine-tune of the same batch reached (the strategy's cell of cycle 2).

Strategies of one seed share everything but their batch, so the comparison is within seeds:
* pair agreement: of all pairs of strategies within a seed, the share the proxy orders as the real
  fine-tune does (0.5 = no information; ties in either count half);
* Spearman of the seed-centred values, pooled over seeds.

Beside them, the pseudo-label count that the head proxy was found to reward backwards (docs/RESULTS.md):
each batch's pseudo-labelled objects (detections >= pseudo_conf), its expected objects (the sum of its
detection scores >= 0.05: what the detector's own confidences predict, no training) and true objects,
and two count-neutral readings of the pseudo-label value, measured rather than assumed:
* `proxy_pseudo_per_object`: the gain over L alone divided by the batch's pseudo-labelled objects;
* `proxy_pseudo_count_residual`: the seed-centred value minus its pooled least-squares line on the
  seed-centred pseudo-label count (fitted on these very batches: an in-sample, optimistic reading).

The real fine-tune's outcome is itself noisy (its training seed is one draw; docs/RESULTS.md), so
an agreement below 1 is partly the fine-tune's noise, not the proxy's. A benchmark run with
`finetune_repeats` R > 1 gives the mean of R fine-tunes per batch, and this script uses that mean.

Proxy settings are measured by overriding the benchmark's lookup_table keys, e.g.
`--set lookup_table.pseudo_labels=sampled --set lookup_table.pseudo_conf=0.25` (the seeds' detectors,
batches and fine-tune outcomes stay those of the benchmark; only the proxy's values change).

  python bench/proxy_vs_finetune.py --bench /work/bench_out/reward [--seeds 0,1,2] [--work /tmp/proxy_vs_finetune]
      [--set lookup_table.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr

from scale_common import benchmark_seed, machine, oracle_objects, write_result

from mgral_backends.ultralytics.proxy_training import pseudo_targets
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import load_params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import (cache_cycle_features, head_config, labeled_only_record, record_value,
                                           true_label_record)

PROXIES = ("proxy_true", "proxy_pseudo", "proxy_pseudo_per_object", "proxy_pseudo_count_residual")
COUNTS = ("pseudo_objects", "expected_objects", "true_objects")
EXPECTED_FLOOR = 0.05  # `expected_objects`: the sum of the batch's detection scores >= this (no training)


def proxy_overrides(settings: list[str]) -> dict:
    """{"lookup_table.KEY": value} from `--set lookup_table.KEY=VALUE` (VALUE read as YAML); other sections refused."""
    overrides = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("lookup_table.") or key.count(".") != 1:
            raise SystemExit(f"--set {setting!r}: expected lookup_table.KEY=VALUE (only the proxy's settings "
                             "can change: the detectors and batches are the benchmark's)")
        overrides[key] = yaml.safe_load(value)
    return overrides


def cached_truth(table: Path, params, run: str, record) -> dict:
    """The batch's true-label record, trained once per head setting: the pseudo-label settings that `--set`
    varies do not touch a record without pseudo-labels, so every variant reuses it (table/truth_values.json)."""
    config = head_config(params)
    key = f"{config.trainable}|{config.epochs}|{config.lr}|{list(config.seeds)}|{config.metric}"
    path = table / "truth_values.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    if run not in cache.get(key, {}):
        cache.setdefault(key, {})[run] = record()
        write_json_atomic(path, cache)
    return cache[key][run]


def seed_rows(bench: Path, seed_dir: Path, work: Path, overrides: dict | None = None) -> list[dict]:
    """One row per finished strategy of the seed: its batch's proxy values and its real fine-tune outcome."""
    seed = benchmark_seed(seed_dir)
    base, weights, inference = seed["base"], seed["weights"], seed["inference"]
    params = load_params(base / "params.yaml", overrides)
    table = work / seed_dir.name
    cache_cycle_features(base, params, weights, table)
    labeled_only = labeled_only_record(base, params, table, weights)["value"]
    detections, oracle = load_inference(inference).detections_by_id(), load_project_info(base).oracle_dir
    rows = []
    for run, batch in seed["runs"]:
        cell = run / "cells" / "cycle_002.json"
        if not cell.exists():
            continue
        start = time.time()
        truth = cached_truth(table, params, run.name, lambda: true_label_record(base, params, table, weights, batch))
        pseudo = record_value(base, params, table, f"pvf_{run.name}", weights, batch, inference)
        pseudo_objects = sum(len(classes) for _, classes in pseudo_targets(
            detections, batch, params.lookup_table.pseudo_conf).values())  # detections >= pseudo_conf
        expected_objects = sum(float(detections[i].scores[detections[i].scores >= EXPECTED_FLOOR].sum()) for i in batch)
        rows.append({"seed": int(seed_dir.name.split("_")[1]), "run": run.name,
                     "pseudo_objects": pseudo_objects, "expected_objects": round(expected_objects, 3),
                     "true_objects": oracle_objects(oracle, batch),
                     "proxy_labeled_only": labeled_only,
                     "proxy_pseudo_per_object": (pseudo["value"] - labeled_only) / max(pseudo_objects, 1),
                     "finetune_test": finetune_mean(run), "finetunes": 1 + len(repeats_of(run)),
                     "start_test": json.loads((run / "cells" / "cycle_001.json").read_text())["map50_95"],
                     "proxy_true": truth["value"], "proxy_pseudo": pseudo["value"],
                     "seconds": round(time.time() - start, 1)})
        print(f"  {seed_dir.name} {run.name:60s} fine-tune {rows[-1]['finetune_test']:.4f}  "
              f"proxy true {truth['value']:.4f}  pseudo {pseudo['value']:.4f}", flush=True)
    return rows


def repeats_of(run: Path) -> list[Path]:
    """The campaign's repeated fine-tunes of cycle 2 (benchmark.<profile>.finetune_repeats > 1)."""
    return sorted((run / "cells").glob("cycle_002_repeat_*.json"))


def finetune_mean(run: Path) -> float:
    """Test mAP50-95 of the batch's real fine-tune: cycle 2's cell, averaged with its repeats where they exist."""
    paths = [run / "cells" / "cycle_002.json", *repeats_of(run)]
    return float(np.mean([json.loads(p.read_text())["map50_95"] for p in paths]))


def seed_centred(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] - frame.groupby("seed")[column].transform("mean")


def with_count_residual(frame: pd.DataFrame) -> pd.DataFrame:
    """`proxy_pseudo_count_residual`: the seed-centred pseudo value less its pooled line on the centred count."""
    x, y = seed_centred(frame, "pseudo_objects").to_numpy(float), seed_centred(frame, "proxy_pseudo").to_numpy(float)
    slope = float(x @ y / (x @ x)) if x @ x > 0 else 0.0
    return frame.assign(proxy_pseudo_count_residual=y - slope * x)


def pair_agreement(frame: pd.DataFrame, column: str) -> tuple[float, int]:
    """Share of within-seed pairs of strategies that `column` orders as the real fine-tune does."""
    agree, pairs = 0.0, 0
    for _, group in frame.groupby("seed"):
        for a, b in itertools.combinations(group.to_dict("records"), 2):
            real, proxy = np.sign(a["finetune_test"] - b["finetune_test"]), np.sign(a[column] - b[column])
            agree += 0.5 if real == 0 or proxy == 0 else float(real == proxy)
            pairs += 1
    return (agree / pairs if pairs else float("nan")), pairs


def centred_spearman(frame: pd.DataFrame, column: str) -> float:
    centred = frame.assign(**{c: seed_centred(frame, c) for c in ("finetune_test", column)})
    return float(spearmanr(centred["finetune_test"], centred[column]).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="a finished `mgral benchmark --out` folder")
    parser.add_argument("--work", default="/tmp/proxy_vs_finetune", help="head features per seed (reused)")
    parser.add_argument("--seeds", default=None, help="comma-separated subset of the benchmark's seeds")
    parser.add_argument("--out", default="proxy_vs_finetune")
    parser.add_argument("--set", action="append", default=[], metavar="lookup_table.KEY=VALUE",
                        help="a proxy setting to measure instead of the benchmark's (repeatable)")
    args = parser.parse_args()
    overrides = proxy_overrides(args.set)
    bench, work = Path(args.bench).resolve(), Path(args.work)
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}", flush=True)
    rows = []
    wanted = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    for seed_dir in sorted((bench / "runs").glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        if wanted is not None and int(seed_dir.name.split("_")[1]) not in wanted:
            continue
        if (seed_dir / "base" / "cycles" / "cycle_001" / "detector" / "best.pt").exists():
            rows += seed_rows(bench, seed_dir, work, overrides)
    if not rows:
        sys.exit(f"{bench}: no finished seed with a first detector and cycle-2 cells")
    frame = with_count_residual(pd.DataFrame(rows))
    figures = {}
    for column in PROXIES + COUNTS:
        agreement, pairs = pair_agreement(frame, column)
        figures[column] = {"pair_agreement": round(agreement, 3), "pairs": pairs,
                           "centred_spearman": round(centred_spearman(frame, column), 3)}
        print(f"{column:27s} vs the real fine-tune: pair agreement {agreement:.3f} over {pairs} within-seed pairs "
              f"(0.5 = none); Spearman of seed-centred values {figures[column]['centred_spearman']:+.3f} "
              f"over {len(frame)} batches", flush=True)
    spread = frame.groupby("seed")[["finetune_test", "proxy_true"]].std().median()
    print(f"median within-seed sd: fine-tune {spread['finetune_test']:.4f}, proxy (true labels) "
          f"{spread['proxy_true']:.4f}")
    write_result(args.out, {"command": "python bench/proxy_vs_finetune.py " + " ".join(sys.argv[1:]),
                            "machine": info, "bench": str(bench), "overrides": overrides,
                            "rows": frame.to_dict("records"), "figures": figures,
                            "median_within_seed_sd": spread.round(5).to_dict()})


if __name__ == "__main__":
    main()

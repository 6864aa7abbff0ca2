"""Tables and figures of a finished benchmark for docs/RESULTS.md (run by scripts/benchmark.sh).

Copies the learning curves and first-cycle histograms into `--docs`, and writes:
  auc.md          regenerated from results.csv (`mgral_workspace.reports.benchmark_markdown`): AUC per
                  strategy with the paired t-interval, Wilcoxon p, probability of improvement and minimum
                  detectable difference, a verdict per strategy, the oracle ceiling minus random per
                  cycle, and the power calculation (seeds needed to detect half the ceiling's lead); with
                  finetunes.csv (finetune_repeats > 1) also the repeated fine-tunes' within-cell sd;
  cycles.md       test mAP50-95 per strategy and labeled count: mean ± std over seeds, and the
                  paired difference to random (mean, and how many seeds it is positive in);
  mgral_cycles.md MGRAL's lookup-table diagnostics per seed and cycle (repeatability, fidelity,
                  leave-one-out Spearman, fallbacks, the agent's final estimated reward against the
                  random-batch reference) from cycles/cycle_NNN/{lookup_table/diagnostics,mgral_summary}.json,
                  the Spearman of the records' values against their batches' object counts (oracle),
                  and with lookup_diagnostics the reward chain's fidelity on diverse batches and MGRAL's
                  true-label value minus the best record's and the ceiling's (reward_chain.json);
  ceiling_cycles.md the oracle ceiling's own candidates per seed and cycle (true-label head-proxy values:
                  chosen, best proposal, mean random batch) from cycles/cycle_NNN/oracle_ceiling/candidates.json.
The ceiling reads the oracle: every table names it `oracle_best_of_n (ceiling)`.

The tables are made from the last run's results.csv (its plan's strategies and seeds). `--all-seeds`
makes them from the result cells of every finished campaign in the folder instead (`runs/seed_*/*/cells`,
the seeds of all runs that reused it), optionally only `--seeds` and `--strategies`; a campaign with cycles
missing is left out and named. Comparisons pair each strategy with random over the seeds both finished;
the learning curves are redrawn over the same cells.

`--pair-with` joins the strategies of earlier runs' results.csv to the tables, so that a run of new
variants is compared with every strategy of an earlier run of the same profile and seeds without
training those again. That is valid only when the two runs trained the same detectors (the training
is bit-reproducible on one kind of machine, docs/RELIABILITY.md), and it is checked: every
(strategy, seed, cycle) cell both files hold must agree, or the report stops naming the first cell that does not.

    python bench/benchmark_report.py --bench benchmark_results/quick --docs docs/results/quick
    python bench/benchmark_report.py --bench /work/bench_out/new --docs docs/results/new \
        --pair-with docs/results/quick10_r1/results.csv
    python bench/benchmark_report.py --bench /work/bench_out/c3 --docs docs/results/quick_3cycles_all --all-seeds
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from scale_common import oracle_objects

from mgral_core.benchmark_analysis import TIDY_COLUMNS
from mgral_core.strategies import display_name, oracle_readers
from mgral_workspace.benchmark import run_name
from mgral_workspace.plots import plot_learning_curves
from mgral_workspace.reports import benchmark_markdown


def cycle_table(tidy: pd.DataFrame, metric: str = "map50_95", reference: str = "random") -> pd.DataFrame:
    """One row per (strategy, labeled): mean, std, paired diff to `reference` and seeds where it is > 0."""
    rows = []
    wide = tidy.pivot_table(index=["labeled", "seed"], columns="strategy", values=metric)
    for (strategy, labeled), group in tidy.groupby(["strategy", "labeled"]):
        row = {"strategy": strategy, "labeled": labeled, "seeds": len(group),
               "mean": group[metric].mean(), "std": group[metric].std(ddof=1)}
        if reference in wide.columns and strategy != reference:
            diff = (wide.loc[labeled, strategy] - wide.loc[labeled, reference]).dropna()
            row[f"diff_vs_{reference}"] = diff.mean()
            row["seeds_better"] = f"{int((diff > 0).sum())}/{len(diff)}"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["labeled", "mean"], ascending=[True, False])
    return table.assign(strategy=table["strategy"].map(display_name)) if len(table) else table


def pair_with(tidy: pd.DataFrame, earlier: pd.DataFrame, name: str, metric: str = "map50_95",
              tolerance: float = 1e-9) -> pd.DataFrame:
    """`tidy` with the rows of `earlier` (another run's results.csv) whose strategy it lacks.

    Raises SystemExit when a (strategy, seed, cycle) cell of both differs by more than `tolerance`, or when
    they share no cell at all (nothing shows the two runs trained the same detectors), or when `earlier`
    lacks one of `tidy`'s seeds for a strategy it adds.
    """
    keys = ["strategy", "seed", "cycle"]
    shared = tidy.merge(earlier, on=keys, suffixes=("", "_earlier"))
    if shared.empty:
        raise SystemExit(f"--pair-with {name}: no (strategy, seed, cycle) cell in common with this run, so "
                         "nothing shows both trained the same detectors; refusing to pair them")
    gap = (shared[metric] - shared[f"{metric}_earlier"]).abs()
    if (gap > tolerance).any():
        row = shared[gap > tolerance].iloc[0]
        raise SystemExit(f"--pair-with {name}: {row['strategy']} seed {row['seed']} cycle {row['cycle']} is "
                         f"{row[metric]:.6f} here and {row[f'{metric}_earlier']:.6f} there: the runs trained other "
                         "detectors, so their strategies do not pair")
    added = earlier[~earlier["strategy"].isin(set(tidy["strategy"]))]
    seeds = set(tidy["seed"])
    for strategy, group in added.groupby("strategy"):
        if not seeds <= set(group["seed"]):
            raise SystemExit(f"--pair-with {name}: {strategy} lacks seeds {sorted(seeds - set(group['seed']))} "
                             "of this run")
    added = added[added["seed"].isin(seeds)]
    print(f"paired with {name}: {len(shared)} shared cells identical (largest gap {gap.max():.2e}); "
          f"added {sorted(added['strategy'].unique())}")
    return pd.concat([tidy, added[tidy.columns]], ignore_index=True)


def all_cells(bench: Path, seeds: set[int] | None = None, strategies: set[str] | None = None) -> pd.DataFrame:
    """The tidy rows of every campaign of `bench` with all its cycles' cells (the cycles of plan.json + 1,
    the last being the final evaluation), of `seeds` and `strategies` if given; prints the campaigns left out."""
    plan = json.loads((bench / "plan.json").read_text())
    if plan.get("finetune_repeats", 1) > 1:  # a repeated cycle's figure is the mean of its fine-tunes there
        raise SystemExit(f"{bench}: --all-seeds reads one fine-tune per cycle, and this folder's last run "
                         f"repeated them ({plan['finetune_repeats']}); report it without --all-seeds")
    cycles = plan["cycles"] + 1
    rows, incomplete = [], []
    for cells in sorted(bench.glob("runs/seed_*/*/cells")):
        seed = int(cells.parents[1].name.split("_")[1])
        files = [cells / f"cycle_{c:03d}.json" for c in range(1, cycles + 1)]
        if seeds is not None and seed not in seeds:
            continue
        if not all(f.exists() for f in files):
            incomplete.append(f"{cells.parent.name} seed {seed} ({sum(f.exists() for f in files)}/{cycles} cells)")
            continue
        campaign = [json.loads(f.read_text()) for f in files]
        if strategies is None or campaign[0]["strategy"] in strategies:
            rows += [{column: cell[column] for column in TIDY_COLUMNS} for cell in campaign]
    if incomplete:
        print(f"left out, not finished: {'; '.join(incomplete)}")
    if not rows:
        raise SystemExit(f"{bench}: no finished campaign" + (" of the seeds and strategies asked for" if
                                                            seeds is not None or strategies is not None else ""))
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    if strategies is not None and strategies - set(tidy["strategy"]):
        raise SystemExit(f"{bench}: no finished campaign of {sorted(strategies - set(tidy['strategy']))}")
    per_strategy = tidy.groupby("strategy")["seed"].unique()
    for strategy, found in per_strategy.items():
        print(f"{display_name(strategy)}: seeds {' '.join(map(str, sorted(found)))}")
    return tidy


def _seed_of(folder: Path) -> int:
    return int(folder.name.split("_")[1])  # runs/seed_<s>


def ceiling_table(bench: Path, campaigns: set[tuple[str, int]]) -> pd.DataFrame:
    """The ceiling's scored candidates per seed and cycle: what it chose, and how that compares, under the
    same true-label head proxy, with the best proposal and the mean random batch."""
    rows = []
    readers = tuple(oracle_readers())
    for path in sorted(bench.glob("runs/seed_*/*/cycles/cycle_*/oracle_ceiling/candidates.json")):
        run = path.parents[3].name
        if not run.startswith(readers) or (run, _seed_of(path.parents[4])) not in campaigns:
            continue
        data = json.loads(path.read_text())
        rows.append({"run": display_name(run), "seed": int(path.parents[4].name.split("_")[1]),
                     "cycle": data["cycle"], "candidates": data["oracle_candidates"],
                     "chosen": f"{data['oracle_chosen_kind']}:{data['oracle_chosen_source']}",
                     "chosen_value": data["oracle_chosen_value"], "best_proposal": data["oracle_proposal_best"],
                     "random_mean": data["oracle_random_mean"], "gap_vs_random": data["oracle_gap_vs_random"]})
    return pd.DataFrame(rows)


def value_vs_objects(cycle_dir: Path, project: Path) -> float | None:
    """Spearman, over the cycle's table records, of a record's value against the number of objects the
    oracle puts in its batch (a diagnostic after the fact: does the proxy reward object-poor batches?)."""
    values, objects = [], []
    for record in sorted((cycle_dir / "lookup_table").glob("record_*.json")):
        batch = record.with_suffix(".npz")
        if not batch.exists():
            continue
        with np.load(batch, allow_pickle=False) as arrays:
            ids = [str(i) for i in arrays["batch_ids"]]
        count = oracle_objects(project / "oracle" / "labels", ids)
        if count is None:
            return None  # not a simulation project
        values.append(json.loads(record.read_text())["value"])
        objects.append(count)
    if len(values) < 3:
        return None
    return float(pd.Series(values).corr(pd.Series(objects), method="spearman"))


def mgral_table(bench: Path, campaigns: set[tuple[str, int]]) -> pd.DataFrame:
    """MGRAL's per-cycle diagnostics of the `campaigns` ({(run folder name, seed)}) the tables hold."""
    rows = []
    for summary in sorted(bench.glob("runs/seed_*/mgral*/cycles/cycle_*/mgral_summary.json")):
        cycle_dir = summary.parent
        if (cycle_dir.parents[1].name, _seed_of(cycle_dir.parents[2])) not in campaigns:
            continue
        data = json.loads(summary.read_text())
        diagnostics = cycle_dir / "lookup_table" / "diagnostics.json"
        snr = json.loads(diagnostics.read_text()) if diagnostics.exists() else {}
        chain_file = cycle_dir / "reward_chain.json"  # with lookup_diagnostics: links b and e of the reward chain
        chain = json.loads(chain_file.read_text()) if chain_file.exists() else {}
        rows.append({"run": cycle_dir.parents[1].name, "seed": int(cycle_dir.parents[2].name.split("_")[1]),
                     "cycle": int(cycle_dir.name.split("_")[1]), "records": data.get("lookup_records"),
                     "repeatability": snr.get("repeatability"), "fidelity": snr.get("fidelity"),
                     "loo_spearman": data.get("lookup_loo_spearman"), "fallbacks": data.get("lookup_fallbacks"),
                     "far_queries": data.get("lookup_far_queries"), "candidates_read": data.get("agent_candidates_read"),
                     "table_mean": data.get("lookup_value_mean"), "table_std": data.get("lookup_value_std"),
                     "agent_final_reward": data.get("agent_final_reward"),
                     "random_reference": data.get("lookup_reference_value"),
                     "groups_used": data.get("class_gain_groups_used"),  # class_gain: G of the cycle's value
                     "value_vs_objects": value_vs_objects(cycle_dir, cycle_dir.parents[1]),
                     **({"fidelity_diverse": chain.get("fidelity_diverse"),
                         "mgral_minus_best_record": chain.get("mgral_minus_best_record"),
                         "mgral_minus_ceiling": chain.get("mgral_minus_ceiling")} if chain else {})})
    return pd.DataFrame(rows)


def parse_seeds(text: str) -> set[int]:
    """'0-5,8' -> {0, 1, 2, 3, 4, 5, 8}."""
    seeds = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            seeds.update(range(int(low), int(high or low) + 1))
        except ValueError:
            raise SystemExit(f"--seeds: {part!r} is not a seed or a range like 0-5") from None
        if high and int(high) < int(low):
            raise SystemExit(f"--seeds: {part!r} is an empty range (write the smaller seed first)")
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="a finished `mgral benchmark --out` directory")
    parser.add_argument("--docs", required=True, help="where the figures and tables go")
    parser.add_argument("--pair-with", action="append", default=[], metavar="CSV",
                        help="an earlier run's results.csv whose other strategies join the tables (checked: "
                             "shared cells must be identical); may be given more than once")
    parser.add_argument("--all-seeds", action="store_true",
                        help="tables from every finished campaign's cells, not the last run's results.csv")
    parser.add_argument("--seeds", help="with --all-seeds: only these seeds (e.g. 0-5,8)")
    parser.add_argument("--strategies", help="with --all-seeds: only these strategy specs, ';'-separated")
    args = parser.parse_args()
    bench, docs = Path(args.bench), Path(args.docs)
    if (args.seeds or args.strategies) and not args.all_seeds:
        parser.error("--seeds and --strategies choose campaigns for --all-seeds")
    docs.mkdir(parents=True, exist_ok=True)
    copied = ("first_cycle_classes.png", "first_cycle_domains.png") if args.all_seeds else (
        "learning_curves.png", "first_cycle_classes.png", "first_cycle_domains.png", "results.csv", "finetunes.csv",
        "duration.txt")  # the first-cycle histograms are the last run's first seed either way
    for name in copied:
        if (bench / name).exists() and (bench / name).resolve() != (docs / name).resolve():
            shutil.copy(bench / name, docs / name)
    if args.all_seeds:
        tidy = all_cells(bench, parse_seeds(args.seeds) if args.seeds else None,
                         set(args.strategies.split(";")) if args.strategies else None)
        tidy.to_csv(docs / "results.csv", index=False)
        counts = tidy.groupby("strategy")["seed"].nunique()
        plot_learning_curves(tidy, docs / "learning_curves.png", title="seeds: " + ", ".join(
            f"{display_name(s)[:24]} {n}" for s, n in counts.items()) if counts.nunique() > 1 else
            f"{counts.iloc[0]} seeds")
    else:
        tidy = pd.read_csv(bench / "results.csv")
    for earlier in args.pair_with:
        tidy = pair_with(tidy, pd.read_csv(earlier), earlier)
    if args.pair_with:
        tidy.to_csv(docs / "results_paired.csv", index=False)
    fine_tunes = pd.read_csv(bench / "finetunes.csv") if (bench / "finetunes.csv").exists() else None
    statistics = benchmark_markdown(tidy, fine_tunes=fine_tunes)  # with repeats: the measured training noise
    (docs / "auc.md").write_text(statistics)
    print(statistics)
    cycles = cycle_table(tidy)
    (docs / "cycles.md").write_text(cycles.round(4).to_markdown(index=False) + "\n")
    print(cycles.round(4).to_markdown(index=False))
    campaigns = {(run_name(spec), int(seed)) for spec, seed in tidy[["strategy", "seed"]].drop_duplicates()
                 .itertuples(index=False)}  # the tables' campaigns: their diagnostics, no other
    mgral = mgral_table(bench, campaigns)
    if len(mgral):
        shown = mgral.round(3).assign(table_std=mgral["table_std"].round(5))  # the spread is ~1e-4
        (docs / "mgral_cycles.md").write_text(shown.to_markdown(index=False) + "\n")
        print(shown.to_markdown(index=False))
        means = mgral.groupby("run")[["repeatability", "fidelity", "loo_spearman", "value_vs_objects"]].mean(
            numeric_only=True)
        print("means over seeds and cycles:\n" + means.round(3).to_markdown())
    ceiling = ceiling_table(bench, campaigns)
    if len(ceiling):
        (docs / "ceiling_cycles.md").write_text(ceiling.round(4).to_markdown(index=False) + "\n")
        print(ceiling.round(4).to_markdown(index=False))
    print(f"written to {docs}")


if __name__ == "__main__":
    main()

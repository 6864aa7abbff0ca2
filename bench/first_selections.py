"""The paper's Fig. 4 analog: what each strategy picked in the first cycle of a benchmark run.

Reads a finished benchmark (`mgral benchmark --out DIR`), seed `--seed`, and for each strategy
draws the first `--per-strategy` images of its first-cycle selection with their (now revealed)
boxes, and prints per strategy: instances per class, images per domain, and how many
near-duplicate clusters the batch touched versus how many of its images sit in an
already-represented cluster (redundancy). Writes DIR/first_selections.png and .md.

    python bench/first_selections.py --bench benchmark_results
    python bench/first_selections.py --bench benchmark_results --strategies entropy_mean,entropy_sum,coreset,mgral
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mgral_formats.yolo import read_yolo_label
from mgral_workspace.benchmark import run_dir
from mgral_workspace.config import split_strategy_list
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.visualize import render_grid


def describe(project: Path) -> tuple[list[str], pd.Series, pd.Series, dict]:
    """(selected ids, instances per class, images per domain, redundancy counts) of cycle 1."""
    ids = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())["ids"]
    info, pool = load_project_info(project), PoolState.load(project)
    table = pool.table.set_index("image_id")
    classes = pd.Series(0, index=list(info.class_names))
    for image_id in ids:
        for c in read_yolo_label(project / table.loc[image_id, "label_file"], 1, 1)[1]:
            classes.iloc[int(c)] += 1
    meta = pd.read_csv(project / "metadata.csv", dtype={"image_id": str}).set_index("image_id").loc[ids]
    clustered = meta[meta["cluster_id"] >= 0] if "cluster_id" in meta else meta.iloc[:0]
    redundancy = {"images": len(ids), "in_clusters": len(clustered),
                  "clusters_touched": int(clustered["cluster_id"].nunique()) if len(clustered) else 0,
                  "repeats_in_a_cluster": int(len(clustered) - clustered["cluster_id"].nunique()) if len(clustered) else 0}
    return ids, classes, meta["domain"].value_counts(), redundancy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="benchmark_results", help="a finished benchmark output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default="entropy_mean,entropy_sum,coreset,mgral")
    parser.add_argument("--per-strategy", type=int, default=16)
    args = parser.parse_args()
    bench = Path(args.bench)
    items, classes, domains, redundancy = [], {}, {}, {}
    names: list[str] = []
    for strategy in split_strategy_list(args.strategies):
        project = run_dir(bench, strategy, args.seed)
        if not (project / "cycles" / "cycle_001" / "selection.json").exists():
            raise SystemExit(f"{project}: no first-cycle selection; run `mgral benchmark --out {bench}` first")
        ids, classes[strategy], domains[strategy], redundancy[strategy] = describe(project)
        names = list(load_project_info(project).class_names)
        table = PoolState.load(project).table.set_index("image_id")
        meta = pd.read_csv(project / "metadata.csv", dtype={"image_id": str}).set_index("image_id")
        for image_id in ids[:args.per_strategy]:
            row = table.loc[image_id]
            boxes, cls = read_yolo_label(project / row["label_file"], int(row["width"]), int(row["height"]))
            items.append((project / row["file"], boxes, cls, f"{strategy[:12]} {meta.loc[image_id, 'domain'][:5]}"))
    png = render_grid(items, names, bench / "first_selections.png", cols=8, tile=128)
    lines = [f"First-cycle selections, seed {args.seed} of `{bench}` (rows of the grid: "
             f"{args.per_strategy} images per strategy, in the order {args.strategies}).", "",
             "Instances per class:", "", pd.DataFrame(classes).T.to_markdown(), "",
             "Images per domain:", "", pd.DataFrame(domains).T.fillna(0).astype(int).to_markdown(), "",
             "Near-duplicate clusters:", "", pd.DataFrame(redundancy).T.to_markdown(), ""]
    (bench / "first_selections.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"grid: {png}")


if __name__ == "__main__":
    main()

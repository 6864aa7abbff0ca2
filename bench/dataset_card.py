"""Write the README's sample grid and class/domain frequency tables for the built-in dataset.

Usage: python bench/dataset_card.py [--params params.yaml] [--out docs/images]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from mgral_workspace.config import load_params
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.synthetic import SyntheticSpec, dataset_stats, generate_dataset
from mgral_workspace.visualize import render_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    d = load_params(args.params).dataset
    spec = SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool, n_val=d.n_val, n_test=d.n_test)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(spec, Path(tmp) / "data")
        meta = pd.read_csv(root / "metadata.csv", dtype={"image_id": str})
        picks = pd.concat([meta[(meta.split == "train") & (meta.domain == dom)].head(n)
                           for dom, n in (("clean", 6), ("cluttered", 6), ("degraded", 4))])
        items = []
        for row in picks.itertuples():
            boxes, classes = read_yolo_label(root / "labels" / "train" / f"{row.image_id}.txt",
                                             spec.image_size, spec.image_size)
            items.append((root / "images" / "train" / f"{row.image_id}.png", boxes, classes,
                          f"{row.domain} c{row.cluster_id}" if row.cluster_id >= 0 else row.domain))
        png = render_grid(items, spec.class_names, Path(args.out) / "builtin_samples.png", cols=8, tile=192)
        classes, domains = dataset_stats(root)
    print(f"sample grid: {png}")
    print(classes.round(3).to_markdown())
    print()
    print(domains.round(3).to_markdown())


if __name__ == "__main__":
    main()

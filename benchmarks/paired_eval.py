"""Two ``dermlearn evaluate`` outputs on the same images, compared paired: accuracy, balanced
accuracy and melanoma-vs-rest AUC of each, and their differences (B - A) with lesion-level
bootstrap 95% intervals and p-values (dermlearn.evaluation.paired).

    .venv/bin/python benchmarks/paired_eval.py EVAL_A EVAL_B DATA [--bootstrap 2000]

DATA is the dataset both were evaluated on (its labels and lesion ids).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_a")
    parser.add_argument("eval_b")
    parser.add_argument("data")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()

    from dermlearn.data import load
    from dermlearn.evaluation.evaluate import binary_scores
    from dermlearn.evaluation.paired import paired_comparison
    from dermlearn.taxonomy import assign_classes

    manifest = load(args.data)
    a = pd.read_csv(Path(args.eval_a) / "predictions.csv", dtype={"image": str}).set_index("image")
    b = pd.read_csv(Path(args.eval_b) / "predictions.csv", dtype={"image": str}).set_index("image")
    if set(a.index) != set(b.index):
        raise SystemExit(f"the two evaluations scored different images ({len(a)} and {len(b)})")
    b = b.loc[a.index]
    classes = [c for c in a.columns if c != "label"]
    truth = manifest.table.set_index("image_id").loc[a.index]
    targets = np.array([classes.index(c) for c in
                        assign_classes(manifest.taxonomy, truth["label"], classes)])
    pa, pb = a[classes].to_numpy(float), b[classes].to_numpy(float)
    is_mel, score_a = binary_scores(pa, truth["label"], classes, manifest.taxonomy,
                                    "melanoma_vs_rest")
    _, score_b = binary_scores(pb, truth["label"], classes, manifest.taxonomy, "melanoma_vs_rest")
    table = paired_comparison(targets, pa, pb, groups=truth["lesion_id"].astype(str).to_numpy(),
                              score_a=score_a, score_b=score_b, is_positive=is_mel,
                              n_boot=args.bootstrap)
    print(f"{len(a)} images, {truth['lesion_id'].nunique()} lesions; B - A, lesion bootstrap")
    print(f"{'metric':<20}{'A':>8}{'B':>8}{'B - A':>9}   95% CI             p")
    for name, row in table.items():
        shown = "melanoma AUC" if name == "auc" else name
        ci = "n/a" if row["ci"] is None else f"{row['ci'][0]:+.3f} to {row['ci'][1]:+.3f}"
        print(f"{shown:<20}{row['a']:>8.3f}{row['b']:>8.3f}{row['diff']:>+9.3f}   {ci:<18} "
              f"{'n/a' if row['p'] is None else format(row['p'], '.3f')}")


if __name__ == "__main__":
    main()

"""The evaluation report's sections, from ``metrics`` and the figures written beside it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dermlearn.evaluation.report import figures as figure_row, fmt, key_values, render_report, table

LEVEL_TITLES = {"esteva3": "Esteva 3-way", "esteva9": "Esteva 9-way style",
                "malignant_vs_benign": "malignant vs benign", "melanoma_vs_rest": "melanoma vs rest",
                "ham7": "HAM10000 7 classes", "isic2019": "ISIC 2019 classes"}

DEFINITIONS = (
    "<p class='note'>Conventions of the ISIC challenge (and of the <code>isic-challenge-scoring"
    "</code> package, which a test compares against): the predicted class is the argmax and a "
    "tied maximum counts as wrong; balanced accuracy is the mean per-class recall; per-class "
    "sensitivity, specificity, PPV and NPV are one-vs-rest at probability threshold 0.5; "
    "'AUC &gt;80% sens.' is the raw partial area under the ROC curve where sensitivity is at "
    "least 80%; AP is average precision. Taxonomy levels are obtained by summing class "
    "probabilities up the tree (PA, Esteva et al. 2017). AUC confidence intervals are "
    "percentile bootstrap intervals over images. ECE: 15 equal-width bins of top-class "
    "confidence.</p>")


def headline_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = [("images", metrics.get("n")), ("accuracy", metrics.get("accuracy")),
            ("balanced accuracy (ISIC)", metrics.get("balanced_accuracy")),
            ("macro AUC", metrics.get("auc_macro")), ("ECE", metrics.get("ece"))]
    for level in ("malignant_vs_benign", "melanoma_vs_rest"):
        m = metrics.get("levels", {}).get(level)
        if m and m.get("auc") is not None:
            ci = m.get("auc_ci")
            rows.append((f"{LEVEL_TITLES[level]} AUC (95% CI)",
                         f"{fmt(m['auc'])} ({fmt(ci)})" if ci else m["auc"]))
    for level in ("esteva3", "esteva9"):
        m = metrics.get("levels", {}).get(level)
        if m:
            rows.append((f"{LEVEL_TITLES[level]} accuracy", m.get("accuracy")))
    return rows


PER_CLASS_KEYS = ("n", "recall", "sensitivity", "specificity", "ppv", "npv", "auc", "auc_sens_80", "ap")


def folds_table(cv: Mapping[str, Mapping[str, Any]]) -> str:
    """k-fold results as mean ± sd (Esteva et al.'s tables)."""
    rows = [[name.replace("_", " "), v.get("mean"), v.get("sd"), v.get("n")]
            for name, v in cv.items()]
    return "<p>Per fold (each fold scored by its own held-out model):</p>" + table(
        rows, ["metric", "mean", "sd", "folds"]) if rows else ""


def per_class_table(per_class: Mapping[str, Mapping[str, Any]],
                    macro: Mapping[str, Any] | None = None) -> str:
    rows = [[label] + [v.get(k) for k in PER_CLASS_KEYS] for label, v in per_class.items()]
    if macro:
        rows.append(["macro average", None] + [macro.get(k) for k in PER_CLASS_KEYS[1:]])
    return table(rows, ["class", "n", "recall (argmax)", "sensitivity @0.5", "specificity", "PPV", "NPV", "AUC",
                        "AUC >80% sens.", "AP"])


def levels_table(levels: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [[LEVEL_TITLES.get(name, name), m.get("n"), m.get("accuracy"),
             m.get("balanced_accuracy"), m.get("auc_macro"), m.get("auc"), m.get("auc_ci")]
            for name, m in levels.items()]
    return table(rows, ["level (PA)", "n", "accuracy", "balanced accuracy", "macro AUC",
                        "binary AUC", "95% CI"])


def operating_points_table(levels: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, m in levels.items():
        for point in m.get("operating_points", []):
            rows.append([LEVEL_TITLES.get(name, name), point.get("fixed"), point.get("at"),
                         point.get("sensitivity"), point.get("specificity"),
                         point.get("threshold")])
    return table(rows, ["task", "fixed", "at", "sensitivity", "specificity", "threshold"]) \
        if rows else ""


def readers_html(levels: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name, m in levels.items():
        readers = m.get("readers")
        if not readers:
            continue
        points = readers["points"]
        parts.append(f"<p><b>{fmt(LEVEL_TITLES.get(name, name))}</b>: "
                     f"{readers['n_below']} of {len(points)} readers lie below the curve.</p>")
        parts.append(table([[p["name"], p["sensitivity"], p["specificity"], p["below_curve"]]
                            for p in points],
                           ["reader", "sensitivity", "specificity", "below curve"]))
    return "".join(parts)


def subgroups_table(subgroups: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rows = [[f"{attribute} = {group}", m.get("n"), m.get("accuracy"), m.get("balanced_accuracy"),
             m.get("auc_macro")]
            for attribute, groups in subgroups.items() for group, m in groups.items()]
    return table(rows, ["subgroup", "n", "accuracy", "balanced accuracy", "macro AUC"]) \
        if rows else ""


def locked_html(locked: Mapping[str, Any] | None) -> str:
    """The locked operating point: its source, the rates with Wilson CIs, and per subgroup."""
    if not locked:
        return ""

    def rate(r: Mapping[str, Any]) -> str:
        if r.get("value") is None:
            return "–"
        return f"{fmt(r['value'])} ({fmt(r['ci'])}; {r['k']}/{r['n']})"

    def auc(m: Mapping[str, Any]) -> str:
        if m.get("auc") is None:
            return "–"
        return fmt(m["auc"]) + (f" ({fmt(m['auc_ci'])})" if m.get("auc_ci") else "")

    head = (f"<p>{fmt(LEVEL_TITLES.get(locked['task'], locked['task']))}, threshold "
            f"{locked['threshold']:.4f} on the probability, {fmt(locked['source'])}; decided per "
            f"{fmt(locked['unit'])}; {locked['n']} cases, {locked['n_positive']} positive; ROC "
            f"AUC {auc(locked)} (bootstrap 95% CI over the cases).</p>")
    rows = [[name, rate(locked[name])] for name in ("sensitivity", "specificity", "ppv", "npv")]
    groups = [[f"{column} = {group}", g["n"], g["n_positive"], rate(g["sensitivity"]),
               rate(g["specificity"]), auc(g), g["why"] or ""]
              for column, values in locked.get("subgroups", {}).items()
              for group, g in values.items()]
    return (head + table(rows, ["at the locked threshold", "value (Wilson 95% CI; k/n)"])
            + (("<p>Subgroups at the same threshold (flagged where too small to say "
                "anything):</p>" + table(groups, ["subgroup", "n", "positive", "sensitivity",
                                                  "specificity", "AUC (95% CI)",
                                                  "too small"]))
               if groups else ""))


def cases_html(cases: Mapping[str, Any] | None) -> str:
    """The worst errors as a table, with the counts of each kind of case."""
    if not cases:
        return ""
    counts = ", ".join(f"{n} {kind}" for kind, n in cases["counts"].items())
    rows = [[c["rank"], c["image"], c["truth"], c["predicted"], c["p_predicted"],
             c.get("p_malignant"), c["kind"], c["predictions_row"]] for c in cases["worst"]]
    return (f"<p>{counts}; {cases['missed_melanoma']} missed melanoma(s). Every image is in "
            f"<code>cases.csv</code>, the worst errors first (missed malignancies by their "
            f"malignancy probability, then confident false positives); "
            f"<code>line</code> is its line in <code>predictions.csv</code>.</p>"
            + table(rows, ["rank", "image", "truth", "predicted", "p", "P(malignant)", "kind",
                           "line"]))


def calibration_note(metrics: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The ECE and where the temperature was fitted, with a warning when it was fitted on the
    images it is measured on."""
    calibration = metrics.get("calibration", {})
    n, fitted = metrics.get("n"), calibration.get("temperature_fitted_on_these")
    text = (f"<p>Expected calibration error {fmt(metrics.get('ece'))}; temperature "
            f"{fmt(calibration.get('temperature', summary.get('temperature')))} (fitted on the "
            f"training run's validation predictions; 1 or – means none).</p>")
    if fitted:
        text += (f"<p class='warn'>The temperature was fitted on {fitted} of these {n} images "
                 f"(the run's validation part), so this ECE is measured on images it was fitted "
                 f"on and is optimistic; evaluate images it never saw (another dataset, or "
                 f"--part test) for an unbiased figure.</p>")
    elif fitted == 0 and calibration.get("temperature", 1.0) != 1.0:
        text += "<p class='note'>None of these images took part in fitting the temperature.</p>"
    return text


def focus_table(focus: Mapping[str, Any]) -> str:
    rows = [[label] + list(v.values()) for label, v in focus["per_class"].items()]
    header = ["class"] + list(next(iter(focus["per_class"].values())).keys()) if rows else []
    return (f"<p class='note'>Share of {focus['method']} mass inside the dermatologist's lesion "
            f"mask, against the mask's share of the image (chance), and the pointing-game hit "
            f"rate (the map's maximum lies in the lesion).</p>" + table(rows, header)) \
        if rows else ""


def build_report(out: str | Path, metrics: Mapping[str, Any],
                 figures: Mapping[str, Sequence[tuple[Path, str]]],
                 summary: Mapping[str, Any]) -> Path:
    """Write ``out/report.html`` (self-contained) and return its path."""
    out = Path(out)
    fig = {k: list(v) for k, v in figures.items()}
    sections = [
        ("Run summary", key_values(summary)),
        ("Headline", table(headline_rows(metrics), ["metric", "value"])
         + folds_table(metrics.get("cv", {})) + DEFINITIONS),
        ("Per class", per_class_table(metrics["per_class"], metrics.get("macro"))),
        ("Confusion matrices", figure_row(fig.get("confusion", []))),
        ("Taxonomy levels", levels_table(metrics.get("levels", {}))),
        ("Locked operating point", locked_html(metrics.get("locked"))),
        ("ROC curves", figure_row(fig.get("roc", [])) + operating_points_table(
            metrics.get("levels", {})) + readers_html(metrics.get("levels", {}))),
        ("Calibration", figure_row(fig.get("calibration", [])) + calibration_note(
            metrics, summary)),
        ("Embedding (t-SNE)", figure_row(fig.get("tsne", []))),
        ("Explanations", figure_row(fig.get("explain", []), wide=True) + (
            focus_table(metrics["lesion_focus"]) if metrics.get("lesion_focus") else "")),
        ("Subgroups", subgroups_table(metrics.get("subgroups", {}))),
        ("Case review", figure_row(fig.get("cases", []), wide=True)
         + cases_html(metrics.get("cases"))),
    ]
    return render_report(out / "report.html", "dermlearn evaluation report", sections,
                         subtitle=f"{summary.get('evaluated on', '')}")

"""``dermlearn report MODEL --eval EVAL_DIR --out model-report.md``: a model report that fills
the TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM (Tejani et al., 2024) items dermlearn knows
from the model's own files (:func:`~dermlearn.evaluation.model_facts.model_facts`) and from
an evaluation, and marks every item it cannot know as "to complete".

Written as Markdown and as a self-contained HTML page beside it.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dermlearn.atomic import atomic_write, check_output_file
from dermlearn.evaluation.model_facts import model_facts

__all__ = ["TO_COMPLETE", "model_report", "write_model_report"]

TO_COMPLETE = "**to complete** (not known to dermlearn)"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{_num(value[0], digits)}–{_num(value[1], digits)}"
    return str(value)


def _weights(weights: Any) -> str:
    """The weights' description without the training machine's file layout."""
    return re.sub(r"(/[^\s()]+/)([^/\s()]+)", r"\2", str(weights))


def _rate(rate: Mapping[str, Any] | None) -> str:
    if not rate or rate.get("value") is None:
        return "–"
    return f"{_num(rate['value'])} ({_num(rate['ci'])})"


def _subgroups(locked: Mapping[str, Any] | None,
               plain: Mapping[str, Mapping[str, Any]] | None) -> str:
    """Subgroup results: at the locked threshold when there is one (n, positives, AUC,
    sensitivity and specificity with 95% CIs, the too-small flag), else the evaluation's
    sex / age / site table (n, balanced accuracy, macro AUC)."""
    if locked and locked.get("subgroups"):
        lines = ["at the locked threshold above:", "",
                 "| subgroup | n | positive | AUC (95% CI) | sensitivity (95% CI) | "
                 "specificity (95% CI) | too small |", "|---|---|---|---|---|---|---|"]
        for column, groups in locked["subgroups"].items():
            for group, m in groups.items():
                auc = ("–" if m.get("auc") is None
                       else f"{_num(m['auc'])} ({_num(m.get('auc_ci'))})")
                lines.append(f"| {column} = {group} | {m['n']} | {m['n_positive']} | {auc} | "
                             f"{_rate(m['sensitivity'])} | {_rate(m['specificity'])} | "
                             f"{m.get('why') or ''} |")
        return "\n".join(lines) + "\n"
    if plain:
        return "; ".join(f"{column}: " + ", ".join(
            f"{g} n={m.get('n')} balanced accuracy {_num(m.get('balanced_accuracy'))}"
            for g, m in groups.items()) for column, groups in plain.items())
    return TO_COMPLETE


def _sample_size(training: Mapping[str, Any], splits: Mapping[str, Any]) -> str:
    per_class = "per class: " + ", ".join(f"{c} {n}" for c, n in
                                          (training.get("classes") or {}).items())
    if training.get("validation") == "out-of-fold":
        k = splits.get("folds")
        return (f"{training.get('n_images', '–')} images of {training.get('n_lesions', '–')} "
                f"lesions in {k}-fold cross-validation: each image trained {k - 1} of the {k} "
                f"members and was held out by the other; {per_class}" if isinstance(k, int)
                else f"{training.get('n_images', '–')} images, cross-validated; {per_class}")
    return (f"{training.get('n_images', '–')} training images of "
            f"{training.get('n_lesions', '–')} lesions; {training.get('n_validation', '–')} "
            f"validation images; {per_class}")


def _training(recipe: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    if not recipe:
        return TO_COMPLETE
    if recipe.get("mode") == "features":
        return (f"recipe {recipe.get('name')}: a {recipe.get('head')} head on the frozen "
                f"backbone's features, class weights {recipe.get('class_weights')}, seed "
                f"{recipe.get('seed')}")
    return (f"recipe {recipe.get('name')}: mode {recipe.get('mode')}, {recipe.get('epochs')} "
            f"epochs, {recipe.get('optimizer')} lr {recipe.get('lr')}, batch "
            f"{recipe.get('batch_size')}, augmentation {recipe.get('augment')}, class weights "
            f"{recipe.get('class_weights')} (power {recipe.get('class_weight_power')}), label "
            f"smoothing {recipe.get('label_smoothing')}, seed {recipe.get('seed')}; the "
            f"checkpoint with the best validation {recipe.get('select_metric')} kept"
            + (f"; then refit on every training image for {config['refit'].get('epochs')} "
               f"epochs" if config.get("refit") else "")
            + (f"; distilled from {Path(str(recipe['teacher'])).parent.name}"
               if recipe.get("teacher") else ""))


def _items(facts: Mapping[str, Any], evaluation: Mapping[str, Any] | None
           ) -> list[tuple[str, str, str]]:
    """(section, item, what dermlearn knows) rows, in reporting order."""
    config, recipe = facts["config"], facts["recipe"]
    training = facts.get("training_data") or {}
    splits = facts.get("splits") or {}
    validation = facts.get("validation") or {}
    run_metrics = facts.get("run_metrics") or {}
    pre = config.get("preprocess") or {}
    classes = config.get("classes") or []
    rows = [
        ("Introduction", "Intended use and users (TRIPOD+AI 3, CLAIM 2)", facts["intended_use"]),
        ("Introduction", "Clinical pathway and setting", TO_COMPLETE),
        ("Methods: data", "Source of data (TRIPOD+AI 5a, CLAIM 7)",
         f"{training.get('source') or facts.get('data') or TO_COMPLETE} "
         f"({training.get('format', 'format unknown')})"),
        ("Methods: data", "Dates, centres and eligibility of participants (TRIPOD+AI 5b, 6a)",
         TO_COMPLETE),
        ("Methods: data", "Outcome and its reference standard (TRIPOD+AI 7, CLAIM 14-16)",
         f"{len(classes)} classes ({', '.join(classes)}) of the {config.get('taxonomy', {}).get('name', '')} "
         f"taxonomy; how each label was established (histopathology, follow-up, consensus): "
         f"{TO_COMPLETE}, see the data's label_source column"),
        ("Methods: data", "Sample size (TRIPOD+AI 8)", _sample_size(training, splits)),
        ("Methods: data", "Data partitions and their level (CLAIM 19-21, TRIPOD+AI 10c)",
         (f"{splits.get('n_images')} images, {splits.get('n_lesions')} lesions, split into "
          f"{splits.get('folds')} part(s) grouped by {splits.get('grouped_by')} (no "
          f"{splits.get('grouped_by')} in two parts, checked), {splits.get('test_part')} images "
          f"held out as a test part" if splits else TO_COMPLETE)),
        ("Methods: data", "Missing data and de-identification (TRIPOD+AI 9, CLAIM 11-12)",
         TO_COMPLETE),
        ("Methods: model", "Input preprocessing (CLAIM 13, TRIPOD+AI 10a)",
         f"input {pre.get('input_size')} px, shorter side resized to size / crop_pct "
         f"({pre.get('crop_pct')}) with {pre.get('interpolation')} interpolation, centre crop, "
         f"normalised by mean {pre.get('mean')} and std {pre.get('std')}"
         + (f"; Shades of Gray colour constancy p={pre['color_constancy']}"
            if pre.get("color_constancy") else "")),
        ("Methods: model", "Model (TRIPOD+AI 12a, CLAIM 22-24)",
         f"{config.get('backbone')} (weights: {_weights(config.get('weights'))}), "
         + (f"an ensemble of {len(config['ensemble'])} members"
            + (f" with weights {[round(w, 3) for w in config['ensemble_weights']]}"
               if config.get("ensemble_weights") else "") if config.get("ensemble")
            else "one network")
         + ("; age, sex and site fused into the head" if config.get("metadata") else "")),
        ("Methods: model", "Training (CLAIM 25-27, TRIPOD+AI 12b)", _training(recipe, config)),
        ("Methods: model", "Calibration (TRIPOD+AI 12e)",
         f"temperature {_num(config.get('temperature'))} fitted on the validation predictions"
         + (f" (ECE {_num((run_metrics.get('calibration') or {}).get('ece'))} before, "
            f"{_num((run_metrics.get('calibration') or {}).get('ece_calibrated'))} after, "
            f"measured on the same images: optimistic)"
            if (run_metrics.get("calibration") or {}).get("ece_calibrated") is not None else "")),
        ("Methods: model", "Out-of-distribution screen",
         (f"{facts['ood'].get('method')}, threshold at the {facts['ood'].get('percentile')}th "
          f"percentile of {facts['ood'].get('n_images')} training images' held-out scores"
          if facts.get("ood") else "none fitted")),
        ("Results", "Internal validation (TRIPOD+AI 20-23)",
         (f"{validation.get('protocol') or run_metrics.get('validation', 'hold-out')}: n "
          f"{validation.get('n')}, accuracy {_num(validation.get('accuracy'))}, balanced "
          f"accuracy {_num(validation.get('balanced_accuracy'))}, macro AUC "
          f"{_num(validation.get('auc_macro'))}" if validation else TO_COMPLETE)),
    ]
    if evaluation:
        source = evaluation.get("source") or {}
        levels = evaluation.get("levels") or {}
        aucs = "; ".join(f"{name.replace('_', ' ')} AUC {_num(m.get('auc'))} (95% CI "
                         f"{_num(m.get('auc_ci'))})" for name, m in levels.items()
                         if m.get("auc") is not None)
        rows.append(("Results", "Evaluation (TRIPOD+AI 23, CLAIM 35-37)",
                     f"{source.get('evaluated on') or source.get('data')}: n {evaluation['n']}, "
                     f"accuracy {_num(evaluation['accuracy'])}, balanced accuracy "
                     f"{_num(evaluation['balanced_accuracy'])}; {aucs}"))
        locked = evaluation.get("locked")
        rows.append(("Results", "Performance at a locked operating point (TRIPOD+AI 23b)",
                     (f"{locked['task']} at threshold {locked['threshold']:.4f} "
                      f"({locked['source']}), per {locked['unit']}: "
                      + ", ".join(f"{k} {_num(locked[k]['value'])} ({_num(locked[k]['ci'])})"
                                  for k in ("sensitivity", "specificity", "ppv", "npv"))
                      if locked else TO_COMPLETE + ": evaluate with --threshold-from")))
        rows.append(("Results", "Performance in subgroups, fairness (TRIPOD+AI 23a, 14)",
                     _subgroups(locked, evaluation.get("subgroups"))))
        cases = evaluation.get("cases")
        rows.append(("Results", "Failure analysis (CLAIM 40)",
                     (", ".join(f"{n} {k}" for k, n in cases["counts"].items())
                      + f"; {cases['missed_melanoma']} missed melanoma(s); every case in "
                        f"cases.csv" if cases else TO_COMPLETE)))
    else:
        rows.append(("Results", "Evaluation on data not used for development (TRIPOD+AI 23)",
                     TO_COMPLETE + ": give --eval EVAL_DIR"))
    rows += [
        ("Discussion", "Limitations (TRIPOD+AI 27, CLAIM 42)", " ".join(facts["limitations"])),
        ("Discussion", "Usability in practice, human-AI interaction", TO_COMPLETE),
        ("Other", "Funding, conflicts of interest, registration, ethics approval", TO_COMPLETE),
        ("Other", "Code and model availability (TRIPOD+AI 18)",
         f"dermlearn {config.get('dermlearn_version')}; model folder {facts['directory']}"),
    ]
    return rows


def model_report(model: str | Path, evaluation: str | Path | None = None, *,
                 comparison: str | Path | None = None) -> str:
    """The report as Markdown (``evaluation``: a ``dermlearn evaluate`` output folder;
    ``comparison``: a ``dermlearn compare --out`` folder, added as a section)."""
    facts = model_facts(model)
    metrics = None
    if evaluation is not None:
        path = Path(evaluation) / "metrics.json"
        if not path.is_file():
            from dermlearn.errors import DataError

            raise DataError(f"{evaluation}: no metrics.json (give a dermlearn evaluate output "
                            f"folder)")
        metrics = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"# Model report: {Path(facts['directory']).parent.name or facts['directory']}", "",
             "Items of TRIPOD+AI (2024) and CLAIM (2024) that dermlearn knows from the model's "
             "files" + (f" and the evaluation in `{evaluation}`" if evaluation else "")
             + f"; the rest are marked {TO_COMPLETE}.", ""]
    section = None
    for heading, item, text in _items(facts, metrics):
        if heading != section:
            lines += (["", f"## {heading}", ""] if section else [f"## {heading}", ""])
            section = heading
        lines.append(f"- **{item}**: {text}")
    if comparison is not None:
        from dermlearn.evaluation.compare import comparison_markdown, read_comparison

        lines += ["", "## Comparison with another model (TRIPOD+AI 23, CLAIM 37)", "",
                  "Both models scored the same images; differences are paired.", "",
                  comparison_markdown(read_comparison(comparison))]
    return "\n".join(lines) + "\n"


def write_model_report(model: str | Path, out: str | Path,
                       evaluation: str | Path | None = None, *,
                       comparison: str | Path | None = None) -> tuple[Path, Path]:
    """Write the report to ``out`` (Markdown) and ``out`` with ``.html``; returns both paths."""
    out = check_output_file(out)
    text = model_report(model, evaluation, comparison=comparison)
    page = _html(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    html_path = out.with_suffix(".html")
    atomic_write(html_path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out, html_path


def _html(markdown: str) -> str:
    """The report's Markdown (headings, bullets, bold, code, tables) as a small self-contained
    page."""
    from dermlearn.evaluation.report import CSS, table

    body = []
    in_list = False
    rows: list[list[str]] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
            continue
        if rows:
            body.append(table(rows[1:], header=rows[0]))
            rows = []
        escaped = html.escape(line)
        while "**" in escaped:
            escaped = escaped.replace("**", "<b>", 1).replace("**", "</b>", 1)
        while escaped.count("`") >= 2:
            escaped = escaped.replace("`", "<code>", 1).replace("`", "</code>", 1)
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{escaped[2:]}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        if line.startswith("## "):
            body.append(f"<h2>{escaped[3:]}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{escaped[2:]}</h1>")
        elif line.strip():
            body.append(f"<p>{escaped}</p>")
    if in_list:
        body.append("</ul>")
    if rows:
        body.append(table(rows[1:], header=rows[0]))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Model report'
            f'</title><style>{CSS}</style></head><body><main>{"".join(body)}</main></body>'
            f'</html>')

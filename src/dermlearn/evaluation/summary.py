"""The headline of a metrics dict as the CLI and the demo print it."""
from __future__ import annotations

__all__ = ["format_metrics"]


def format_metrics(metrics: dict) -> str:
    """Accuracy, balanced accuracy, AUCs per class and per binary level, and CV mean ± sd."""
    what = f"validation ({metrics['validation']}, " if "validation" in metrics else "evaluation ("
    lines = [f"{what}n={metrics['n']}): "
             f"accuracy {metrics['accuracy']:.3f}  balanced accuracy "
             f"{metrics['balanced_accuracy']:.3f}  macro AUC {metrics['auc_macro']:.3f}"]
    aucs = ", ".join(f"{c} {v['auc']:.3f}" for c, v in metrics["per_class"].items()
                     if v["auc"] is not None)
    lines.append(f"per-class AUC: {aucs}")
    for level in ("melanoma_vs_rest", "malignant_vs_benign", "esteva3"):
        if level in metrics.get("levels", {}):
            m = metrics["levels"][level]
            extra = f"  AUC {m['auc']:.3f}" if m.get("auc") is not None else ""
            lines.append(f"{level}: accuracy {m['accuracy']:.3f}  balanced accuracy "
                         f"{m['balanced_accuracy']:.3f}{extra}")
    if "cv" in metrics:
        lines.append("cross-validation (mean ± sd over folds): " + ", ".join(
            f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in metrics["cv"].items()))
    return "\n".join(lines)

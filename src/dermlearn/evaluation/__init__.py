"""Evaluation in the field's conventions: ISIC metrics, taxonomy levels, ROC with CIs,
calibration, subgroups and validated prediction tables (pure functions on arrays)."""
from dermlearn.evaluation.binary import (
                                         binary_report,
                                         bootstrap_auc_ci,
                                         fold_summary,
                                         load_readers,
                                         readers_vs_curve,
                                         roc_points,
                                         sensitivity_at_specificity,
                                         specificity_at_sensitivity,
)
from dermlearn.evaluation.calibration import (
                                         apply_temperature,
                                         expected_calibration_error,
                                         fit_temperature,
                                         reliability_bins,
)
from dermlearn.evaluation.metrics import (
                                         UNDECIDED,
                                         accuracy,
                                         auc_above_sensitivity,
                                         balanced_accuracy,
                                         classification_metrics,
                                         confusion_matrix,
                                         one_vs_rest_counts,
                                         one_vs_rest_rates,
                                         per_class_auc,
                                         per_class_auc_above_sensitivity,
                                         per_class_average_precision,
                                         per_class_recall,
                                         per_class_sensitivity,
                                         predictions,
)
from dermlearn.evaluation.subgroups import AGE_BANDS, age_band, subgroup_metrics
from dermlearn.evaluation.tables import align_truth, read_predictions

__all__ = ["AGE_BANDS", "UNDECIDED", "accuracy", "age_band", "align_truth", "apply_temperature",
           "auc_above_sensitivity", "balanced_accuracy", "binary_report", "bootstrap_auc_ci",
           "classification_metrics", "confusion_matrix", "expected_calibration_error",
           "fit_temperature", "fold_summary", "load_readers", "one_vs_rest_counts",
           "one_vs_rest_rates", "per_class_auc", "per_class_auc_above_sensitivity",
           "per_class_average_precision", "per_class_recall", "per_class_sensitivity",
           "predictions", "read_predictions", "readers_vs_curve", "reliability_bins",
           "roc_points", "sensitivity_at_specificity", "specificity_at_sensitivity",
           "subgroup_metrics"]

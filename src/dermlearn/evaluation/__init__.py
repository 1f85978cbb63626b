"""Evaluation in the field's conventions: ISIC metrics, taxonomy levels, ROC with CIs."""
from dermlearn.evaluation.metrics import (accuracy, balanced_accuracy, classification_metrics,
                                          per_class_auc, per_class_sensitivity, predictions)

__all__ = ["accuracy", "balanced_accuracy", "classification_metrics", "per_class_auc",
           "per_class_sensitivity", "predictions"]

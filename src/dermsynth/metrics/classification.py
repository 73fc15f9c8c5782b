"""Classification metrics as the studies report them (scikit-learn underneath).

Balanced multi-class accuracy is the ISIC 2018 Task 3 score: the mean of the per-class recalls
(sensitivities) over the classes present in the ground truth.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)


def _auc_one_vs_rest(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    positives = y_true == k
    if positives.all() or not positives.any():
        return float("nan")  # undefined without both positives and negatives
    return float(roc_auc_score(positives, scores))


def classification_report(y_true, probabilities, classes: list[str] | tuple[str, ...]) -> dict:
    """All metrics for predicted class probabilities (n, k) against integer labels (n,)."""
    y_true = np.asarray(y_true, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(y_true), len(classes)):
        raise ValueError(f"probabilities have shape {probabilities.shape}, expected ({len(y_true)}, {len(classes)})")
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, _, support = precision_recall_fscore_support(y_true, predicted, labels=labels, zero_division=0)
    aucs = [_auc_one_vs_rest(y_true, probabilities[:, k], k) for k in labels]
    counts = confusion_matrix(y_true, predicted, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts / counts.sum(axis=1, keepdims=True)
    report = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "per_class": {name: {"recall": float(recall[k]), "precision": float(precision[k]),
                             "auc": aucs[k], "support": int(support[k])} for k, name in enumerate(classes)},
        "mean_auc": float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan"),
        "confusion": {"classes": list(classes), "counts": counts.tolist(),
                      "normalised": np.nan_to_num(normalised).round(6).tolist()},
    }
    if len(classes) == 2:
        report["binary_auc"] = aucs[1]
    return report

"""Accuracy and fairness of a classifier's predictions, per class and per superclass (fairlearn ``MetricFrame``).

``evaluate_predictions`` returns the metrics the pipeline logs each iteration:
``acc`` (overall), ``acc/class/<name>``, ``acc/<superclass>`` (accuracy over that superclass's test images),
``acc/worst_class``, ``acc/worst_superclass`` and ``fair/superclass_gap`` (max - min superclass accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, confusion_matrix


@dataclass(frozen=True)
class FairnessReport:
    accuracy: float
    per_class: dict[str, float]
    per_superclass: dict[str, float]
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted

    @property
    def worst_class(self) -> float:
        return min(self.per_class.values())

    @property
    def superclass_gap(self) -> float:
        values = list(self.per_superclass.values())
        return max(values) - min(values)

    def metrics(self, prefix: str = "acc") -> dict[str, float]:
        out = {f"{prefix}/test": self.accuracy, f"{prefix}/worst_class": self.worst_class,
               f"{prefix}/worst_superclass": min(self.per_superclass.values()),
               "fair/superclass_gap": self.superclass_gap}
        out.update({f"{prefix}/{name}": value for name, value in self.per_superclass.items()})
        out.update({f"{prefix}/class/{safe_name(name)}": value for name, value in self.per_class.items()})
        return out


def safe_name(name: str) -> str:
    """A class name usable in an MLflow metric key (``T-shirt/top`` -> ``T-shirt_top``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def evaluate_predictions(labels: np.ndarray, predicted: np.ndarray, class_names: list[str],
                         superclasses: np.ndarray) -> FairnessReport:
    """``labels``, ``predicted``: int (N,); ``superclasses``: (N,) the superclass of each sample's true class."""
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    by_class = MetricFrame(metrics=accuracy_score, y_true=labels, y_pred=predicted,
                           sensitive_features=pd.Series([class_names[i] for i in labels], name="class"))
    by_super = MetricFrame(metrics=accuracy_score, y_true=labels, y_pred=predicted,
                           sensitive_features=pd.Series(np.asarray(superclasses).astype(str), name="superclass"))
    return FairnessReport(
        accuracy=float(by_class.overall),
        per_class={str(k): float(v) for k, v in by_class.by_group.items()},
        per_superclass={str(k): float(v) for k, v in by_super.by_group.items()},
        confusion=confusion_matrix(labels, predicted, labels=list(range(len(class_names)))),
    )

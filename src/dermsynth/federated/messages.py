"""What may travel between the server and a hospital in a federated round (both sides import this).

A train message's reply holds exactly two records: the ArrayRecord `arrays` (the model's shared arrays,
`state.shared_arrays` names) and the MetricRecord `metrics` with the scalar metrics `METRICS`. Nothing else leaves a
hospital: no images, keys, labels or features.
"""

from __future__ import annotations

METRICS = ("num-examples", "hospital-index", "local-steps", "hospital-steps", "loss-G", "loss-D", "augment-p",
           "seconds")


def check_reply(content, expected_arrays: set[str]) -> None:
    """Check a hospital's reply `content` (a Flower `RecordDict`): one ArrayRecord `arrays` holding exactly
    `expected_arrays` (names), one MetricRecord `metrics` with int or float values of `METRICS` only. Raises
    ValueError naming what else it holds (nothing else may leave a hospital)."""
    records = set(content.keys())
    if records != {"arrays", "metrics"}:
        raise ValueError(f"a reply holds records {sorted(records)}; only 'arrays' and 'metrics' may leave a hospital")
    names = set(content.array_records["arrays"].keys())
    if names != expected_arrays:
        raise ValueError(f"a reply's arrays are not the model's shared arrays ({len(names)} vs {len(expected_arrays)})")
    metrics = content.metric_records["metrics"]
    unknown = set(metrics.keys()) - set(METRICS)
    if unknown or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise ValueError(f"a reply's metrics hold {sorted(unknown) or 'non-scalar values'}; only {METRICS} may")


__all__ = ["METRICS", "check_reply"]

"""Minimum sample sizes of the generative metrics, checked before any feature is extracted.

Every metric of `evaluate-gan`, `gan-curve` and `evaluate-images` needs a least number of real and
of generated images to be defined at all:

| metric (JSON keys) | real images | generated images | why |
|---|---|---|---|
| FID (`fid`, `fid_rank_deficient`) | 2 | 2 | a sample covariance needs two images per set |
| KID (`kid`, `kid_percent`) | 2 | 2 | the unbiased estimator divides by m(m − 1), m = min(`kid_subset`, real, generated) |
| precision, recall (`precision`, `recall`) | k + 1 | k + 1 | each image's k-th nearest *other* image in its own set (k = `evaluation.k`, 3 by default) |
| α-precision, β-recall (`alpha_precision`, `beta_recall`) | k + 1 | 1 | the k-NN radius of every real image |
| authenticity (`authenticity`) | 2 | 1 | each real image's nearest other real image |
| memorisation (`memorisation`, the CSV) | 2 | 1 | the same |
| PPL (`ppl`) | — | 1 path | generated pairs only (`evaluation.ppl_samples`, ≥ 2 in the schema) |

What happens when a set is too small (decided per metric, the same in every evaluator):

- A metric whose minimum is not met is **undefined**: its keys are written as `null` and
  `undefined[<key>]` in the JSON says why (the minimum, the counts and what to change); the other
  metrics are computed, and one line per undefined metric goes to stderr. `table1` shows such a
  metric as an empty cell.
- When **no** metric of the command can be computed (fewer than 2 real images, no generated image;
  for `gan-curve`, which only computes FID/KID, fewer than 2 in either set) the command stops with
  one line naming the counts and each metric's minimum — before any image is loaded into a feature
  network.
- FID from fewer images than feature dimensions (2048 for Inception) is defined but its covariances
  are singular: `fid_rank_deficient: true` flags it, and such FIDs are only comparable with FIDs from
  the same numbers of images. KID from fewer images than `kid_subset` uses smaller subsets
  (`kid_subset_size` records the size used).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import DermsynthError


class TooFewImages(DermsynthError):
    """No metric of an evaluation can be computed from the images given."""


@dataclass(frozen=True)
class Minimum:
    """A metric's minimum numbers of `real` and `generated` images, the JSON `keys` it fills (null below them),
    its printed `name` and `why` it needs them."""
    name: str                 # as printed
    keys: tuple[str, ...]     # JSON keys the metric fills (null when undefined)
    real: int
    generated: int
    why: str


def minimums(k: int | None) -> dict[str, Minimum]:
    """The declared minimum numbers of real and generated images per metric, for `k` nearest neighbours
    (`evaluation.k`); k None: only the metrics that need no neighbours (FID, KID, authenticity, memorisation)."""
    table = {
        "fid": Minimum("FID", ("fid", "fid_rank_deficient"), 2, 2, "a covariance needs 2 images per set"),
        "kid": Minimum("KID", ("kid", "kid_percent"), 2, 2, "unbiased kernel estimate over subsets of ≥ 2"),
    }
    if k is not None:
        table["precision_recall"] = Minimum("precision/recall", ("precision", "recall"), k + 1, k + 1,
                                            f"each image's k-th nearest other image in its own set, k = {k}")
        table["alpha_beta"] = Minimum("α-precision/β-recall", ("alpha_precision", "beta_recall"), k + 1, 1,
                                      f"the k-NN radius of each real image, k = {k}")
    table["authenticity"] = Minimum("authenticity", ("authenticity",), 2, 1, "each real image's nearest other real image")
    table["memorisation"] = Minimum("memorisation", ("memorisation",), 2, 1, "each real image's nearest other real image")
    return table


def requirement(m: Minimum) -> str:
    """The minimum of `m` in words: 'FID ≥ 2 in each set', or separate real and generated counts."""
    if m.real == m.generated:
        return f"{m.name} ≥ {m.real} in each set"
    return f"{m.name} ≥ {m.real} real and ≥ {m.generated} generated"


def _advice(advice: str | dict[str, str], short: list[str]) -> str:
    """The advice for the sides ('real', 'generated') that are short: one text, or one per side."""
    if isinstance(advice, str):
        return f" — {advice}" if advice else ""
    parts = [advice[side] for side in short if advice.get(side)]
    return f" — {'; '.join(parts)}" if parts else ""


def _short(m: Minimum, n_real: int, n_generated: int) -> list[str]:
    return [side for side, n, least in (("real", n_real, m.real), ("generated", n_generated, m.generated)) if n < least]


def undefined(n_real: int, n_generated: int, metrics: list[str], k: int | None,
              advice: str | dict[str, str] = "") -> dict[str, str]:
    """{metric: reason} for each of `metrics` (names of `minimums`) whose minimum is not met. `advice`:
    what to do, one text or one per short side ({'real': …, 'generated': …})."""
    table, reasons = minimums(k), {}
    for name in metrics:
        m = table[name]
        short = _short(m, n_real, n_generated)
        if short:
            reasons[name] = (f"{m.name} needs at least {m.real} real and {m.generated} generated "
                             f"image{'' if m.generated == 1 else 's'} ({m.why}); got {n_real} real, {n_generated} generated"
                             + _advice(advice, short))
    return reasons


def check(n_real: int, n_generated: int, metrics: list[str], k: int | None, what: str = "",
          advice: str | dict[str, str] = "") -> dict[str, str]:
    """The reasons of the undefined metrics (see `undefined`), each also printed as one line to stderr;
    raises `TooFewImages` (one line: the counts, every metric's minimum, the advice) when none of
    `metrics` is defined. Call it before extracting features."""
    reasons = undefined(n_real, n_generated, metrics, k, advice)
    if len(reasons) == len(metrics):
        table = minimums(k)
        uses_k = k is not None and any(table[name].real == k + 1 for name in metrics)
        raise TooFewImages(f"{what + ': ' if what else ''}too few images for any metric: {n_real} real, "
                           f"{n_generated} generated; minimums: "
                           + "; ".join(requirement(table[name]) for name in metrics)
                           + (f" (k = {k} nearest neighbours)" if uses_k else "")
                           + _advice(advice, sorted({side for name in metrics
                                                     for side in _short(table[name], n_real, n_generated)},
                                                    key=["real", "generated"].index)))
    for name, reason in reasons.items():
        print(f"{what + ': ' if what else ''}{reason}; written as null", file=sys.stderr)
    return reasons


def null_keys(reasons: dict[str, str], k: int) -> dict[str, str]:
    """The reasons per JSON key (every key an undefined metric fills), for the JSON's `undefined` field."""
    table = minimums(k)
    return {key: reason for name, reason in reasons.items() for key in table[name].keys}


def config_warnings(evaluation: dict) -> list[str]:
    """What the `evaluation` section's own sample sizes leave undefined, known before any job runs (the
    real side's size is known only after the split): one message per metric, naming the key to change."""
    k, messages = evaluation["k"], []
    checks = [("fake_samples", evaluation["fake_samples"], "generated"),
              ("real_samples", evaluation.get("real_samples"), "real")]
    for key, count, side in checks:
        if count is None:
            continue
        for m in minimums(k).values():
            least = m.generated if side == "generated" else m.real
            if count < least:
                messages.append(f"evaluation.{key}: {count} {side} images per generator leave {m.name} undefined "
                                f"(null in results/metrics/gan/*.json): it needs at least {least} ({m.why}); "
                                f"raise evaluation.{key}" + (" or lower evaluation.k" if least == k + 1 else ""))
    return messages

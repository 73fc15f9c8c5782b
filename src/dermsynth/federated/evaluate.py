"""The ISIC study's federated comparison (§4.1, §5): FID curves of the federated model, of each hospital alone
and of the central generator, and the table of how fast each hospital reaches an FID threshold with and without
the federation.

`federated_curves` evaluates every snapshot of the three kinds of model against the real training images of each
hospital and of all of them pooled (FID and KID in Inception features, FD/KID in EfficientNet-Lite0 features —
`metrics.registry`, as `gan-curve`). Progress is measured in **hospital iterations**: training steps one hospital
has run (federated round r = r × local_steps; a hospital-alone baseline's own steps; the central generator's
steps), so a federated model and a hospital's own model are compared after the same local work.

`federated_table` turns the curves into the comparison: for each hospital, on its own real images, the first
evaluated iteration at which the federated model and the hospital-alone model reach the FID threshold, their
ratio (alone ÷ federated; > 1 means the federation reached it faster — the study reports ≈ 1.6× for the smallest
hospital), and the best FID alone, federated and central.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..checkpoints import GENERATOR_KINDS, load_checkpoint
from ..data.dataset import read_images
from ..devices import choose_device
from ..errors import InputError
from ..figures import MODEL_COLOURS, random_init_note
from ..figures import pyplot as plt
from ..gan.run import GENERATOR_FIX, generator_from_state
from ..metrics import registry
from ..metrics.gan_eval import class_schedule, feature_networks, generated_features
from ..metrics.generative import FidOptions, KidOptions
from ..metrics.options import GAN_CURVE_EXTRACTORS
from ..outputs import save_figure, write_csv
from .options import EvaluateFederatedOptions, FederatedTableOptions

POOLED = "pooled"


def references(options: EvaluateFederatedOptions, federated_csv) -> dict[str, pd.DataFrame]:
    """Real image sets: each hospital's training images and all of them pooled (rows of federated.csv; the run's
    `classes`; a seeded subset of `evaluation.real_samples` each when set)."""
    table = pd.read_csv(federated_csv, dtype=str, keep_default_na=False)
    table = table[table["hospital"].isin(options.hospitals)]
    if options.classes:
        table = table[table["label"].isin(options.classes)]
    ev, out = options.evaluation, {}
    for name in [*options.hospitals, POOLED]:
        rows = table if name == POOLED else table[table["hospital"] == name]
        limit = ev.get("real_samples")
        if limit is not None and limit < len(rows):
            rows = rows.sample(n=limit, random_state=ev["seed"])
        out[name] = rows.sort_values("key").reset_index(drop=True)
    return out


def snapshots(options: EvaluateFederatedOptions, federated_network, alone: list, central) -> list[tuple[str, Path]]:
    """(model, snapshot path) for every evaluated snapshot: `federated`, `alone:<hospital>` (in the order of
    `alone`, one per hospital), `central`."""
    found = [("federated", p) for p in sorted(Path(federated_network).parent.glob("network-snapshot-round*.pt"))]
    for hospital, network in zip(options.hospitals, alone):
        found += [(f"alone:{hospital}", p) for p in sorted(Path(network).parent.glob("network-snapshot-step*.pt"))]
    if central:
        if Path(central).parent.name != options.central:
            raise InputError(f"--central {central} is not the run's central generator {options.central} "
                             f"(results/gan/{options.central}/network-final.pt)")
        found += [("central", p) for p in sorted(Path(central).parent.glob("network-snapshot-step*.pt"))]
    return found


def _snapshot_rows(model: str, path: Path, options, real: dict, nets: dict, labels: pd.Series, device) -> list[dict]:
    ev = options.evaluation
    state = _generator_state(path, device)
    iterations, kimg, rnd = int(state.get("hospital_steps", state["step"])), state["nimg"] / 1000, state.get("round")
    G = generator_from_state(state, device)
    del state
    schedule = class_schedule(G, _classes(options, path), labels, ev["snapshot_samples"], ev["seed"])
    fake = generated_features(G, nets, ev["snapshot_samples"], schedule, ev["truncation_psi"], ev["batch"], device,
                              f"{model} {path.name}")
    rows = []
    for reference, features in real.items():
        values = {}
        for space, net in nets.items():
            n_real = len(features[net.name])
            kid = KidOptions(subset_size=min(ev["kid_subset"], n_real, ev["snapshot_samples"]))
            values.update(registry.compute_metric("fid", space, features[net.name], fake[net.name], FidOptions()))
            values.update(registry.compute_metric("kid", space, features[net.name], fake[net.name], kid))
        rows.append({"model": model, "snapshot": path.name, "round": rnd, "iterations": iterations, "kimg": kimg,
                     "reference": reference, **{k: values[k] for k in ("fid", "kid", "fd_lite0", "kid_lite0")},
                     "n_real": len(features[nets["inception"].name]), "n_fake": ev["snapshot_samples"],
                     "inception_weights": nets["inception"].weights,
                     "inception_real_weights": bool(nets["inception"].real_weights),
                     "lite0_real_weights": bool(nets["lite0"].real_weights)})
    return rows


def _generator_state(path, device="cpu") -> dict:
    """A generator checkpoint (train-gan's or a federated snapshot) through the checkpoint-kind checks: a folder,
    a truncated file or another kind of checkpoint is one WrongFileError line."""
    return load_checkpoint(path, GENERATOR_KINDS, "a generator checkpoint", GENERATOR_FIX, map_location=device)


def _classes(options, path: Path) -> list[str]:
    """The dataset's classes as the snapshot's network-final.json lists them (federated: the run's)."""
    info = Path(path).with_name("network-final.json")
    return json.loads(info.read_text())["classes"] if info.exists() else []


def federated_curves(options: EvaluateFederatedOptions, lmdb_root, federated_csv, federated_network, alone: list,
                     central, out_csv, device: str | None = None) -> pd.DataFrame:
    """Evaluate every snapshot (see `snapshots`) against every reference (see `references`) and write one CSV row
    per (snapshot, reference): model, round, iterations, kimg, reference, fid, kid, fd_lite0, kid_lite0, counts,
    weights. Raises InputError when `alone` does not give one network per hospital, the LMDB store is another
    dataset's or `central` is not the run's central generator; WrongFileError (before any feature is computed) when
    a given network is not a generator checkpoint; FileNotFoundError when one is missing; DeviceError when
    `device` is not on this machine."""
    if options.baselines and len(alone) != len(options.hospitals):
        raise InputError(f"--alone gives {len(alone)} networks for {len(options.hospitals)} hospitals")
    for network in [federated_network, *alone, *([central] if central else [])]:
        _generator_state(network)  # a wrong file is one line now, not after the real images' features
    device = choose_device(device)
    stored = json.loads((Path(lmdb_root) / "index.json").read_text()).get("dataset")
    if stored != options.dataset:
        raise InputError(f"{lmdb_root} holds dataset {stored}, not the run's {options.dataset}")
    refs = references(options, federated_csv)
    nets = feature_networks(GAN_CURVE_EXTRACTORS)
    real = {}
    for name, rows in refs.items():
        images = read_images(lmdb_root, rows["key"].tolist())
        real[name] = {net.name: net.features(images, batch_size=64, device=device) for net in nets.values()}
    table = pd.DataFrame([row for model, path in snapshots(options, federated_network, alone, central)
                          for row in _snapshot_rows(model, path, options, real, nets, refs[POOLED]["label"], device)])
    write_csv(out_csv, table)
    print(f"evaluate-federated {options.run}: {table['snapshot'].nunique()} snapshots × {len(refs)} references → "
          f"{out_csv}", file=sys.stderr)
    return table


# --- the comparison ------------------------------------------------------------------------------------------
def first_reaching(curve: pd.DataFrame, threshold: float) -> float:
    """The smallest `iterations` at which `fid` ≤ `threshold` (NaN when never)."""
    reached = curve[curve["fid"] <= threshold]
    return float(reached["iterations"].min()) if len(reached) else math.nan


def _final_fid(curve: pd.DataFrame) -> float:
    return float(curve.sort_values("iterations")["fid"].iloc[-1]) if len(curve) else math.nan


def comparison_row(curves: pd.DataFrame, hospital: str, threshold: float | None, local_steps: int,
                   participation: dict[str, int], rounds: int) -> dict:
    """One hospital's row of the table (see the module docstring). `threshold` None: the worse of the federated
    and the alone model's final FID on this hospital's images (so both reach it)."""
    own = curves[curves["reference"] == hospital]
    fed, alone, central = (own[own["model"] == m] for m in ("federated", f"alone:{hospital}", "central"))
    if threshold is None:
        threshold = np.nanmax([_final_fid(fed), _final_fid(alone)])
    it_fed, it_alone = first_reaching(fed, threshold), first_reaching(alone, threshold)
    return {"hospital": hospital, "rounds_taken_part": int(participation.get(hospital, 0)), "rounds": rounds,
            "fid_threshold": threshold, "iterations_alone": it_alone, "iterations_federated": it_fed,
            "rounds_alone": it_alone / local_steps, "rounds_federated": it_fed / local_steps,
            "speedup_alone_over_federated": it_alone / it_fed if it_fed and not math.isnan(it_fed) else math.nan,
            "best_fid_alone": float(alone["fid"].min()) if len(alone) else math.nan,
            "best_fid_federated": float(fed["fid"].min()) if len(fed) else math.nan,
            "best_fid_central": float(central["fid"].min()) if len(central) else math.nan}


def federated_table(options: FederatedTableOptions, curves_csv, rounds_csv, out_csv, figure,
                    data_source: str = "") -> pd.DataFrame:
    """The comparison table (one row per hospital, `comparison_row`, plus `real weights` — whether the FIDs come
    from Inception's published weights — and `data`, the archives they were computed on) and the figure."""
    curves = pd.read_csv(curves_csv)
    history = pd.read_csv(rounds_csv, dtype={"hospitals": str})
    participation: dict[str, int] = {}
    for _, row in history.iterrows():
        for hospital in str(row["hospitals"]).split(";"):
            participation[hospital] = participation.get(hospital, 0) + 1
    table = pd.DataFrame([comparison_row(curves, h, options.fid_threshold, options.local_steps, participation,
                                         len(history)) for h in options.hospitals])
    table["real weights"] = bool(curves["inception_real_weights"].all()) if len(curves) else False
    table["data"] = data_source
    write_csv(out_csv, table)
    plot_curves(curves, options, figure)
    return table


def plot_curves(curves: pd.DataFrame, options: FederatedTableOptions, out_png) -> None:
    """FID over hospital iterations, one panel per hospital's real images (+ pooled): federated, that hospital
    alone, central. Each curve has one colour in every panel (`figures.MODEL_COLOURS`: "central" is green in the
    pooled panel too, where there is no "alone" curve), named in one legend for the figure; the title names the
    Inception weights and says "random-init" when they are not the published ones. Raises OutputError."""
    panels = [*options.hospitals, POOLED]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), dpi=120, squeeze=False)
    for ax, reference in zip(axes[0], panels):
        ref = curves[curves["reference"] == reference]
        for model, style in (("federated", "o-"), (f"alone:{reference}", "s--"), ("central", "^:")):
            line = ref[ref["model"] == model].sort_values("iterations")
            kind = model.split(":")[0]
            if len(line):
                ax.plot(line["iterations"], line["fid"], style, label=kind, color=MODEL_COLOURS[kind], markersize=4)
        ax.set_title(f"real images: {reference}", fontsize=8)
        ax.set_xlabel("iterations per hospital", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("FID (Inception-v3 features)", fontsize=8)
    handles = [plt.Line2D([], [], color=MODEL_COLOURS[kind], marker=marker, linestyle=line, label=kind)
               for kind, marker, line in (("federated", "o", "-"), ("alone", "s", "--"), ("central", "^", ":"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    weights = curves["inception_weights"].iloc[0] if len(curves) else "unknown"
    real = bool(curves["inception_real_weights"].all()) if "inception_real_weights" in curves and len(curves) else False
    note = f" (Inception weights: {weights})" if real else \
        random_init_note(False, "Inception: not comparable to published FIDs")  # its seed is in the CSV
    fig.suptitle(f"federated run {options.run}: FID over training{note}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    try:
        save_figure(out_png, fig)
    finally:
        plt.close(fig)


__all__ = ["POOLED", "comparison_row", "federated_curves", "federated_table", "first_reaching", "plot_curves",
           "references", "snapshots"]

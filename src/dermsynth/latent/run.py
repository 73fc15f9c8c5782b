"""`dermsynth latent sefa`: factorise one generator for one layer range and draw the preview grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..devices import choose_device
from ..data.dataset import read_images
from ..gan.generate import network_classes
from ..gan.pixels import render_ws
from ..gan.run import load_generator
from ..locks import exclusive
from ..metrics import extractors
from ..figures import write_image_grid
from ..figures import pyplot as plt
from ..outputs import check_writable, save_figure, save_npz, write_json
from ..provenance import provenance
from .identity import generator_digest
from .options import ProjectOptions, SefaOptions
from .project import ProjectionOptions, project
from .sefa import PreviewSettings, factorize, preview_figure


def run_sefa(options: SefaOptions, network: str | Path, out_npz: str | Path, out_png: str | Path,
             device: str | None = None) -> dict:
    """Factorise generator `network` for layer range `options.layers`: directions (k, w_dim), eigenvalues (k,),
    largest first, the ws indices and names of the range's layers in `out_npz` (+ a .json summary beside it);
    the preview grid (rows: direction × sample, columns: −magnitude … +magnitude) in `out_png`. `device`:
    cpu/cuda (None: cuda when available). The .npz records the generator's identity (`generator`: the digest of
    its weights), so the directions are refused for another generator. Holds `out_npz`'s lock. Raises ValueError
    for an unknown layer range, BusyError, OutputError, WrongFileError (`network` is not a generator). Returns
    the summary."""
    out_npz = Path(out_npz)
    check_writable(out_npz.parent)
    check_writable(Path(out_png).parent)
    with exclusive(out_npz, "sefa"):
        return _sefa_locked(options, network, out_npz, out_png, device)


def _sefa_locked(options: SefaOptions, network, out_npz: Path, out_png, device) -> dict:
    layer_range, settings = options.layers, options.preview()
    device = choose_device(device)
    G = load_generator(network, device)
    factors = factorize(G, layer_range)
    digest = generator_digest(G)
    save_npz(out_npz, directions=factors["directions"], eigenvalues=factors["eigenvalues"],
             ws_indices=np.array(factors["ws_indices"]), layer_names=np.array(factors["layer_names"]),
             generator=np.array(digest))
    classes, _ = network_classes(network)
    figure = preview_figure(G, factors, PreviewSettings.from_section(settings, where="sefa options"),
                            _generator_name(network), classes[0] if G.c_dim and classes else None, device=device)
    try:
        save_figure(out_png, figure)
    finally:
        plt.close(figure)
    eigenvalues = factors["eigenvalues"]
    summary = {"network": str(network), "generator": digest, "layer_range": layer_range,
               "layer_names": factors["layer_names"],
               "ws_indices": factors["ws_indices"], "top_eigenvalues": eigenvalues[:20].round(6).tolist(),
               "explained_by_top10": float(eigenvalues[:10].sum() / eigenvalues.sum()),
               "preview": {"file": str(out_png), "rows": "direction × sample", **settings},
               "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}
    write_json(out_npz.with_suffix(".json"), summary)
    print(f"sefa {layer_range}: {len(factors['layer_names'])} layers, top-10 directions explain "
          f"{summary['explained_by_top10']:.1%} of the style variance", file=sys.stderr)
    return summary


def _generator_name(network) -> str:
    """'<gan>/<file>' of a generator file results/gan/<gan>/network-final.pt (the folder names the GAN)."""
    network = Path(network)
    return f"{network.parent.name}/{network.name}" if network.parent.name else network.name


def chosen_images(options: ProjectOptions, manifest: str | Path):
    """The manifest rows projected: a seeded choice (`options.seed`) of at most `options.images` images of
    `options.split` and of the generator's `options.classes` (None: every class), sorted by key."""
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame = frame[frame["split"] == options.split]
    if options.classes:
        frame = frame[frame["label"].isin(options.classes)]
    return frame.sample(n=min(options.images, len(frame)), random_state=options.seed).sort_values("key")


def save_projection(out_npz: Path, frame, ws: torch.Tensor, noise: list[torch.Tensor], generator: str = "") -> None:
    """projection.npz (atomically): keys and labels of `frame`'s rows, ws (N, num_ws, w_dim), noise<i>
    (N, 1, r, r), and `generator`, the identity of the generator projected into (`identity.generator_digest`)."""
    save_npz(out_npz, keys=np.array(frame["key"].tolist()), labels=np.array(frame["label"].tolist()), ws=ws.numpy(),
             generator=np.array(generator), **{f"noise{i}": m.numpy() for i, m in enumerate(noise)})


def project_in_batches(G, targets: torch.Tensor, class_indices: list[int] | None, lpips, optimiser, batch: int,
                       device, label: str) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Project uint8 `targets` (N, 3, R, R) `batch` images at a time (`project.project` with `optimiser`, a
    `ProjectionOptions`; `class_indices` for a conditional generator). Returns ws (N, num_ws, w_dim), the noise maps
    (each (N, 1, r, r)) and the mean LPIPS-VGG loss per step (steps,)."""
    ws, noise, curves = [], [], []
    for start in range(0, len(targets), batch):
        part = slice(start, start + batch)
        result = project(G, targets[part], lpips, optimiser, None if class_indices is None else class_indices[part],
                         device, label=f"{label} {start}/{len(targets)}")
        ws.append(result["ws"])
        noise.append(result["noise"])
        curves.append(result["lpips_curve"])
    return torch.cat(ws), [torch.cat(maps) for maps in zip(*noise)], torch.cat(curves, dim=1).mean(dim=1)


def run_projection(options: ProjectOptions, network: str | Path, lmdb_root: str | Path, manifest: str | Path,
                   out_npz: str | Path, out_png: str | Path, device: str | None = None) -> dict:
    """Project a seeded choice of `options.images` images of `options.split` (of the generator's `classes`) from
    `lmdb_root`/`manifest` into generator `network`: keys, labels, ws (N, num_ws, w_dim) and the optimised
    noise maps in `out_npz`, a report (.json beside it: L2 and LPIPS-Alex per image and on average, the LPIPS-VGG
    loss curve) and target | reconstruction pairs in `out_png`. The output folders are checked writable before the
    optimisation; `out_npz`'s lock is held. Raises BusyError, OutputError, WrongFileError (`network` is not a
    generator). Returns the report."""
    out_npz = Path(out_npz)
    check_writable(out_npz.parent)
    check_writable(Path(out_png).parent)
    with exclusive(out_npz, "project"):
        return _project_locked(options, network, lmdb_root, manifest, out_npz, out_png, device)


def _project_locked(options: ProjectOptions, network, lmdb_root, manifest, out_npz: Path, out_png, device) -> dict:
    gan = options.gan
    device = choose_device(device)
    G = load_generator(network, device)
    classes, _ = network_classes(network)
    frame = chosen_images(options, manifest)
    targets = read_images(lmdb_root, frame["key"].tolist())
    lpips_vgg, lpips_info = extractors.lpips_model(net="vgg")
    optimiser = ProjectionOptions.from_section(options.to_dict(), where=f"{options.step} options")
    class_indices = [classes.index(label) for label in frame["label"]] if G.c_dim else None
    ws, noise, curve = project_in_batches(G, targets, class_indices, lpips_vgg, optimiser, options.batch, device,
                                          f"project {gan}")
    recon = render_ws(G, ws, noise, device)
    alex, alex_info = extractors.lpips_alex()
    lpips_final = extractors.lpips_distance(alex, targets, recon)
    l2 = ((recon.float() - targets.float()) / 127.5).square().mean(dim=[1, 2, 3]).numpy()
    save_projection(out_npz, frame, ws, noise, generator_digest(G))
    shown = frame.iloc[:16]
    write_image_grid(out_png, torch.stack([targets[:16], recon[:16]], dim=1),
                     [f"{key} ({label})\nLPIPS {d:.3f}" for key, label, d in
                      zip(shown["key"], shown["label"], lpips_final[:16])],
                     ["target", "reconstruction"],
                     f"projection into {_generator_name(network)} ({options.space}, {options.steps} steps): "
                     f"{len(shown)} of {len(frame)} {options.split} images",
                     row_title="image (class), LPIPS-Alex to its target")
    summary = {"gan": gan, "network": str(network), "generator": generator_digest(G), "split": options.split,
               "images": len(frame),
               "space": options.space, "steps": options.steps,
               "l2_mean": float(l2.mean()), "lpips_alex_mean": float(lpips_final.mean()),
               "lpips_vgg_curve": {"first": float(curve[0]), "last": float(curve[-1])},
               "lpips": {"loss": lpips_info, "report": alex_info},
               "per_image": [{"key": k, "l2": float(a), "lpips_alex": float(b)}
                             for k, a, b in zip(frame["key"], l2, lpips_final)],
               "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}
    write_json(out_npz.with_suffix(".json"), summary)
    print(f"project {gan}: {len(frame)} images, L2 {summary['l2_mean']:.4f}, LPIPS {summary['lpips_alex_mean']:.4f}",
          file=sys.stderr)
    return summary

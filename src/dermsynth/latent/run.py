"""`dermsynth sefa`: factorise one generator for one layer range and draw the preview grid."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..outputs import write_json
from ..provenance import provenance
from .sefa import factorize, preview_grid


def run_sefa(cfg: dict, network: str | Path, layer_range: str, out_npz: str | Path, out_png: str | Path,
             device: str | None = None) -> dict:
    from ..gan.run import load_generator
    settings = cfg["latent"]["sefa"]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    G = load_generator(network, device)
    factors = factorize(G, layer_range)
    out_npz = Path(out_npz)
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_npz.with_name(out_npz.stem + ".tmp.npz")
    np.savez(tmp, directions=factors["directions"], eigenvalues=factors["eigenvalues"],
             ws_indices=np.array(factors["ws_indices"]), layer_names=np.array(factors["layer_names"]))
    tmp.replace(out_npz)
    grid = preview_grid(G, factors, settings["preview_directions"], settings["preview_samples"],
                        settings["preview_magnitude"], settings["preview_steps"], settings["truncation_psi"],
                        settings["seed"], device=device)
    Image.fromarray(grid).save(out_png)
    eigenvalues = factors["eigenvalues"]
    summary = {"network": str(network), "layer_range": layer_range, "layer_names": factors["layer_names"],
               "ws_indices": factors["ws_indices"], "top_eigenvalues": eigenvalues[:20].round(6).tolist(),
               "explained_by_top10": float(eigenvalues[:10].sum() / eigenvalues.sum()),
               "preview": {"file": str(out_png), "rows": "direction × sample", **settings},
               "provenance": provenance("sefa", settings, seed=settings["seed"])}
    write_json(out_npz.with_suffix(".json"), summary)
    print(f"sefa {layer_range}: {len(factors['layer_names'])} layers, top-10 directions explain "
          f"{summary['explained_by_top10']:.1%} of the style variance", file=sys.stderr)
    return summary

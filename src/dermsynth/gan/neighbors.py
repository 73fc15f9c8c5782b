"""Neighbours in latent space: N latents at exactly distance d from a centre (ISIC study, §5, edge cases).

The study generated, around an image it wanted more of (an edge case, a misclassified image), images whose
latents lie at a small distance d from that image's latent (its `generate --neighbors N --diameter d`, here
`dermsynth gan generate --neighbors N --radius d`;
d = 0.1). Here a centre is a W+ latent (num_ws, w_dim): the mapped w of a seed (every layer the same), or a
stored projection of a real image (`dermsynth latent project`'s projection.npz, W or W+). Its neighbours are

    w_j = centre + d · u_j   for every layer,   u_j uniform on the unit sphere of R^w_dim,

one offset vector per neighbour added to every layer. So each layer of w_j is exactly d from the same layer
of the centre (Euclidean, in W), and the whole W+ code is d·√num_ws from it. Why W and one offset for every
layer: W is the space the mapping network's outputs span, where distances between images are meaningful
(Z is warped by the mapping); a W-projected centre stays a W latent (a neighbour is an image the generator
can make from one w), and d means the same for seeds and for stored W or W+ projections. The study's option
was named `--diameter`, but its value is this distance to the centre, a radius: the flag is `--radius`.

Directions are drawn by numpy's Generator seeded with (seed, centre id) — the generator seed for a seed
centre, the CRC-32 of the image key for a stored one — so a centre's neighbours do not depend on which
other centres are asked for, and the same seed gives the same neighbours.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoints import load_npz, recorded_in_npz
from ..devices import choose_device
from ..fingerprint import network_identity, require_made_for
from ..locks import exclusive
from ..outputs import check_writable, save_npz, write_csv, write_json, write_png
from ..provenance import provenance
from .generate import network_classes, write_image_set
from .networks import seed_latents
from .pixels import render_ws
from .run import load_generator


def sphere_offsets(count: int, dim: int, distance: float, rng: np.random.Generator) -> np.ndarray:
    """float64 (count, dim): vectors of length exactly `distance` (up to float64 rounding) in directions
    uniform on the sphere (normalised standard normals). Raises ValueError for count < 1, dim < 1 or a
    negative or non-finite distance."""
    if count < 1 or dim < 1:
        raise ValueError(f"need at least one neighbour of at least one dimension, got count={count}, dim={dim}")
    if not np.isfinite(distance) or distance < 0:
        raise ValueError(f"the distance to the centre is a finite number ≥ 0, got {distance}")
    directions = rng.standard_normal((count, dim))
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    return directions / np.maximum(norms, 1e-300) * distance


def neighbour_latents(centres: torch.Tensor, centre_ids: list[int], count: int, distance: float,
                      seed: int) -> torch.Tensor:
    """float32 (M, count, num_ws, w_dim): `count` neighbours of each of the M centres (float (M, num_ws, w_dim),
    or (M, w_dim) for plain W), each layer at exactly `distance` from the centre's layer (one offset per
    neighbour, added to every layer). `centre_ids[i]` seeds centre i's directions with `seed`."""
    if centres.ndim == 2:
        centres = centres[:, None, :]
    if len(centre_ids) != len(centres):
        raise ValueError(f"{len(centres)} centres but {len(centre_ids)} centre ids")
    offsets = np.stack([sphere_offsets(count, centres.shape[-1], distance, np.random.default_rng([seed, int(i)]))
                        for i in centre_ids]) if len(centres) else np.zeros((0, count, centres.shape[-1]))
    moved = centres.double()[:, None, :, :] + torch.from_numpy(offsets)[:, :, None, :]
    return moved.float()


def key_id(key: str) -> int:
    """A stable non-negative integer for an image key (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(key.encode("utf-8"))


@torch.no_grad()
def seed_centres(G, seeds: list[int], truncation_psi: float = 1.0, class_index: int | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 (len(seeds), num_ws, w_dim): the mapped (and truncated) w of each seed's z (`seed_latents`)."""
    z = seed_latents(seeds, G.z_dim).to(device)
    c = None
    if G.c_dim > 0:
        if class_index is None:
            raise ValueError("this generator is conditional: give the class to generate")
        c = torch.zeros(len(seeds), G.c_dim, device=device)
        c[:, class_index] = 1
    return G.to(device).mapping(z, c, truncation_psi=truncation_psi).cpu()


PROJECTION_FIX = "give the projection.npz that `dermsynth latent project` wrote for this generator (or run it again)"


def stored_centres(projection_npz: str | Path, keys: list[str] | None = None, generator: str | None = None,
                   network=None) -> dict:
    """The projected latents of `dermsynth latent project` (projection.npz): {"keys", "labels", "ws" (float32 (M,
    num_ws, w_dim)), "noise" (list of (M, 1, r, r))}, only `keys` (in that order) when given; with `generator`
    (the digest of the generator used, checkpoint `network`) the projection must have been made into it. Raises
    KeyError naming the keys the file does not hold, WrongFileError for a file that is no projection (a folder,
    truncated, another kind), ForeignComponentError for a projection into another generator."""
    saved = load_npz(projection_npz, "a projection (.npz of dermsynth latent project)", PROJECTION_FIX,
                     ("keys", "labels", "ws"))
    if generator is not None:
        require_made_for(projection_npz, recorded_in_npz(saved), generator, network, PROJECTION_FIX)
    stored = saved["keys"].tolist()
    rows = list(range(len(stored)))
    if keys:
        missing = sorted(set(keys) - set(stored))
        if missing:
            raise KeyError(f"{projection_npz} holds no projection of {', '.join(missing)}")
        rows = [stored.index(k) for k in keys]
    noise_count = sum(name.startswith("noise") for name in saved)
    return {"keys": [stored[i] for i in rows], "labels": [saved["labels"].tolist()[i] for i in rows],
            "ws": torch.from_numpy(saved["ws"][rows]).float(),
            "noise": [torch.from_numpy(saved[f"noise{i}"][rows]) for i in range(noise_count)]}


@torch.no_grad()
def render_neighbours(G, latents: torch.Tensor, noise: list[torch.Tensor] | None, batch: int,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (M·count, 3, R, R) images of neighbour latents (M, count, num_ws, w_dim), centre by centre, `batch`
    at a time; with the centres' noise maps (each (M, 1, r, r)) every neighbour uses its centre's noise, with
    None constant noise."""
    m, count = latents.shape[:2]
    flat = latents.reshape(m * count, *latents.shape[2:])
    repeated = None if noise is None else [maps.repeat_interleave(count, dim=0) for maps in noise]
    parts = []
    for start in range(0, len(flat), batch):
        rows = slice(start, start + batch)
        parts.append(render_ws(G, flat[rows], None if repeated is None else [r[rows] for r in repeated], device))
    return torch.cat(parts) if parts else torch.zeros(0, 3, G.img_resolution, G.img_resolution, dtype=torch.uint8)


def neighbour_rows(names: list[str], labels: list[str], source_keys: list[str], count: int, distance: float,
                   seed: int, network: str | Path) -> list[dict]:
    """One manifest row per neighbour, centre by centre: key '<centre name>-nb<j>', label, centre, the
    neighbour's index and distance, the direction seed, the source image key ('' for a seed centre)."""
    return [{"key": f"{name}-nb{j:03d}", "label": label, "centre": name, "neighbour": j, "distance": distance,
             "direction_seed": seed, "source_key": source, "network": str(network), "split": "train"}
            for name, label, source in zip(names, labels, source_keys) for j in range(count)]


def generate_neighbors(network: str | Path, out: str | Path, count: int, distance: float, *, truncation_psi: float,
                       seed: int, batch: int, seeds: list[int] | None = None, latents: str | Path | None = None,
                       keys: list[str] | None = None, class_name: str | None = None, fmt: str = "png",
                       device: str | None = None) -> Path:
    """`dermsynth gan generate --neighbors N --radius d`: `count` neighbours at `distance` around each seed's w
    (`seeds`, mapped at `truncation_psi`) or each stored projection (`latents`, optionally only `keys`; their class
    and noise maps are kept), directions drawn from `seed`, rendered `batch` at a time by generator checkpoint
    `network` into `out` (PNG files + manifest.csv, or an LMDB image set), with neighbors.npz (keys, centre names,
    ws (M·count, num_ws, w_dim), centre ws) and neighbors.json. The verb's flags give `truncation_psi`, `seed` and
    `batch` (`--truncation`, `--neighbor-seed`, `--batch`).
    Holds `out`'s lock (checked writable first); every file is written atomically, the manifest after the
    images. Raises ValueError when neither or both of seeds and latents are given, or for a wrong class;
    WrongFileError / ForeignComponentError for a projection that is no projection or one into another generator;
    BusyError, OutputError."""
    if (seeds is None) == (latents is None):
        raise ValueError("give the centres either as seeds or as stored latents (a projection .npz), not both")
    check_writable(Path(out))
    with exclusive(out, "generate"):
        return _neighbors_locked(network, out, count, distance, seeds, latents, keys, truncation_psi, class_name,
                                 seed, fmt, batch, device)


def _neighbors_locked(network, out, count, distance, seeds, latents, keys, truncation_psi, class_name, seed, fmt,
                      batch, device) -> Path:
    device = choose_device(device)
    G = load_generator(network, device)
    classes, trained_on = network_classes(network)
    if seeds is not None:
        class_name, class_index = _class_of(G, classes, trained_on, class_name)
        centres, noise = seed_centres(G, seeds, truncation_psi, class_index, device), None
        names = [f"{Path(network).parent.name}-seed{s:07d}" for s in seeds]
        labels, sources, ids = [class_name or ""] * len(seeds), [""] * len(seeds), list(seeds)
    else:
        stored = stored_centres(latents, keys, network_identity(G), network)
        centres, noise, names = stored["ws"], stored["noise"], stored["keys"]
        labels, sources, ids = stored["labels"], stored["keys"], [key_id(k) for k in stored["keys"]]
    moved = neighbour_latents(centres, ids, count, distance, seed)
    images = render_neighbours(G, moved, noise, batch, device)
    rows = neighbour_rows(names, labels, sources, count, distance, seed, network)
    _write_neighbours(Path(out), rows, images, moved, centres, fmt, classes)
    _summary(Path(out), network, rows, count, distance, seed, seeds, latents, truncation_psi)
    return Path(out)


def _class_of(G, classes: list[str], trained_on: list[str], class_name: str | None) -> tuple[str | None, int | None]:
    if G.c_dim > 0:
        if class_name not in classes:
            raise ValueError(f"this generator is conditional: give one of its classes ({', '.join(classes)})")
        return class_name, classes.index(class_name)
    if class_name is None and len(trained_on) == 1:
        return trained_on[0], None  # a one-class generator makes that class
    return class_name, None


def _write_neighbours(out: Path, rows: list[dict], images: torch.Tensor, moved: torch.Tensor, centres: torch.Tensor,
                      fmt: str, classes: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        for row, image in zip(rows, images):
            write_png(out / f"{row['key']}.png", image.permute(1, 2, 0).numpy())
        write_csv(out / "manifest.csv", pd.DataFrame(rows))
    else:
        write_image_set(out, rows, images, "binary" if set(classes) == {"benign", "malignant"} else "ham7")
    centres = centres if centres.ndim == 3 else centres[:, None, :]
    save_npz(out / "neighbors.npz", keys=np.array([r["key"] for r in rows]),
             centre=np.array([r["centre"] for r in rows]), ws=moved.reshape(-1, *moved.shape[2:]).numpy(),
             centre_ws=centres.numpy())


def _summary(out: Path, network, rows, count, distance, seed, seeds, latents, truncation_psi) -> None:
    settings = {"neighbors": count, "radius": distance, "seed": seed, "truncation_psi": truncation_psi,
                "centres": "seeds" if seeds is not None else str(latents), "space": "W, one offset on every layer"}
    write_json(out / "neighbors.json", {"network": str(network), "images": len(rows), **settings,
                                        "provenance": provenance("generate", settings, seed=seed)})
    print(f"generate: {len(rows)} neighbours ({count} per centre) at distance {distance} in W → {out}",
          file=sys.stderr)

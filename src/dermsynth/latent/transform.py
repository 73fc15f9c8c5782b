"""Named transformations: SeFa directions applied to the inverted latents of real training images.

A transformations file (config/transformations.yaml) lists, per transformation: name, generator,
layer range, eigenvector index (0 = largest eigenvalue), magnitude range (distance in W along the
unit direction, the units of the SeFa preview grids) and a description. For every source image and
variant, a magnitude is drawn uniformly from the range — seeded by (seed, transformation, source key,
variant), so an image's magnitude does not depend on which other images are transformed — and the
image is re-synthesised from its moved W+ latent with its own HyperStyle kernel offsets.

Each transformed image keeps its source's label and records its provenance (source key,
transformation, direction, layer range, magnitude). LPIPS (AlexNet) is measured against the real
source image (the study's measure) and against its unmoved inversion (what the edit alone changed);
images whose LPIPS to the source exceeds the threshold (0.2 in the study) are rejected and counted.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.dataset import read_images
from ..data.lmdb_store import LmdbImageStore
from ..devices import choose_device
from ..errors import ConfigError
from ..gan.generate import write_image_set
from ..gan.pixels import to_uint8
from ..gan.run import load_generator
from ..locks import exclusive
from ..metrics.extractors import lpips_alex, lpips_distance
from ..metrics.gan_eval import read_report
from ..outputs import check_writable, write_csv, write_json
from ..progress import Progress
from ..provenance import provenance
from .identity import generator_digest, load_npz, recorded_in_npz, require_generator
from .named import REVIEW_KEY, UNKNOWN, checkpoint_sha256, load_transformations, review_state, review_warning
from .options import TransformOptions
from .run_inversion import StoredInversion
from .sefa import apply_direction

PREVIEW_ROWS, PREVIEW_VARIANTS = 8, 4  # preview.png: source | inversion | up to 4 transformed variants


def draw_magnitudes(spec: dict, keys: list[str], variants: int, seed: int) -> np.ndarray:
    """(len(keys), variants) magnitudes, each from its own seed (transformation, key, variant)."""
    low, high = spec["magnitude"]
    name = zlib.crc32(spec["name"].encode())
    out = np.empty((len(keys), variants))
    for i, key in enumerate(keys):
        for v in range(variants):
            out[i, v] = np.random.default_rng([seed, name, zlib.crc32(key.encode()), v]).uniform(low, high)
    return out


def transform_images(G, ws: torch.Tensor, deltas: dict, direction: torch.Tensor, magnitudes: torch.Tensor,
                     ws_indices: list[int], device="cpu") -> torch.Tensor:
    """uint8 images of latents moved by magnitude × direction in `ws_indices`, with their kernel offsets."""
    moved = apply_direction(ws.to(device), direction.to(device), magnitudes.to(device), ws_indices)
    deltas = {k: v.to(device) for k, v in deltas.items()}
    with torch.no_grad():  # a context, not a decorator: mutation testing (docs/testing.md) skips decorated functions
        return to_uint8(G.synthesis(moved, noise_mode="const", weight_deltas=deltas or None))


def at_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 images resized (antialiased) to the generator's resolution when the dataset's differs."""
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    resized = torch.nn.functional.interpolate(images.float(), size=(resolution, resolution), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


SEFA_FIX = "give the sefa-<range>.npz that `dermsynth latent sefa` wrote for this generator (or run it again)"


def sefa_direction(spec: dict, sefa_npz, generator: str | None = None,
                   network=None) -> tuple[torch.Tensor, list[int]]:
    """(unit direction (w_dim,), ws indices of its layer range) of transformation `spec` from a SeFa file; with
    `generator` (the digest of the generator used, checkpoint `network`) the file must have been made for it.
    Raises ConfigError when the file has no such direction, WrongFileError when it is not a SeFa file (a folder,
    truncated, another kind), ForeignComponentError when it was made for another generator."""
    factors = load_npz(sefa_npz, "a SeFa directions file", SEFA_FIX, ("directions", "ws_indices"))
    if generator is not None:
        require_generator(sefa_npz, recorded_in_npz(factors), generator, network, SEFA_FIX)
    if spec["direction"] >= len(factors["directions"]):
        raise ConfigError(f"transformation {spec['name']}: direction {spec['direction']} does not exist "
                          f"({sefa_npz} has {len(factors['directions'])})")
    return torch.from_numpy(factors["directions"][spec["direction"]]).float(), factors["ws_indices"].tolist()


def reviewed_on(spec: dict, transformations, generator: str, network) -> str:
    """Whether transformation `spec` was reviewed on `network` (digest `generator`), from its entry's `review:` block
    in the file `transformations` (None: not judged): 'reviewed', 'stale', 'not reviewed' or 'unknown'. Prints one
    WARNING line (stderr, the job's log) for a stale or never-reviewed entry."""
    if transformations is None:
        return UNKNOWN
    entry = {e["name"]: e for e in load_transformations(transformations)}.get(spec["name"], {})
    record = entry.get(REVIEW_KEY)
    checkpoint = checkpoint_sha256(network) if record and not record.get("generator") else None
    state = review_state(record, generator, checkpoint)
    warning = review_warning(spec, state, network)
    if warning:
        print(f"transform {spec['name']}: WARNING: {warning}", file=sys.stderr, flush=True)
    return state.state


def _row(spec: dict, key: str, label: str, variant: int, magnitude: float, to_source: float, to_inversion: float,
         threshold: float) -> dict:
    """The manifest row of one transformed image (its provenance, LPIPS, whether it is accepted)."""
    return {"key": f"{spec['name']}-{key}-v{variant}", "label": label, "split": "train", "source_key": key,
            "transformation": spec["name"], "gan": spec["gan"], "layer_range": spec["layer_range"],
            "direction": spec["direction"], "magnitude": round(magnitude, 6), "variant": variant,
            "lpips": float(to_source), "lpips_to_inversion": float(to_inversion),
            "accepted": bool(to_source <= threshold)}


def run_transform(options: TransformOptions, network, sefa_npz, inversion_dir, lmdb_root, out_dir, device=None,
                  transformations=None) -> dict:
    """Transformation `options.transformation` over every image of the stored inversion `inversion_dir`
    (`options.variants` versions each), moved along its `direction` of the SeFa file `sefa_npz` (the generator's
    `layer_range`) and re-synthesised by `network`: the transformed images in `out_dir` (LMDB + manifest.csv: label,
    provenance, LPIPS-Alex to the real source in `lmdb_root` and to the unmoved inversion, accepted), a preview
    and transform.json (counts, LPIPS means). The SeFa file and the inversion must have been made with `network`'s
    generator. Holds `out_dir`'s lock. Raises ConfigError when the direction is not in `sefa_npz`,
    WrongFileError / InputError for a file or folder of another kind, ForeignComponentError for components of
    another generator, BusyError, OutputError. Returns the report.

    With `transformations` (the file the entry comes from), its `review:` block is judged against `network`
    (`named.review_state`): an entry reviewed on another checkpoint, or never reviewed (the shipped file's), is
    transformed all the same with one WARNING line naming the fix; the report's `review` says which."""
    out_dir = Path(out_dir)
    check_writable(out_dir.parent)
    with exclusive(out_dir, "transform"):
        return _transform_locked(options, network, sefa_npz, inversion_dir, lmdb_root, out_dir, device,
                                 transformations)


def _transform_locked(options: TransformOptions, network, sefa_npz, inversion_dir, lmdb_root, out_dir: Path,
                      device, transformations=None) -> dict:
    spec = options.transformation
    device = choose_device(device)
    G = load_generator(network, device)
    digest = generator_digest(G)
    direction, ws_indices = sefa_direction(spec, sefa_npz, digest, network)
    review = reviewed_on(spec, transformations, digest, network)
    inversion = StoredInversion(inversion_dir)
    inversion.require_generator(G, network)
    store = LmdbImageStore(lmdb_root)
    keys = inversion.index["key"].tolist()
    labels = dict(zip(inversion.index["key"], inversion.index["label"]))
    variants = options.variants
    magnitudes = draw_magnitudes(spec, keys, variants, options.seed)
    alex, alex_info = lpips_alex()
    rows, images_out, preview_columns = [], [], []
    progress = Progress(len(keys) * variants, f"transform {spec['name']}")
    for start in range(0, len(keys), options.batch):
        chunk = keys[start:start + options.batch]
        ws, deltas = inversion.latents(chunk)
        sources = at_resolution(read_images(store, chunk), G.img_resolution)
        inverted = transform_images(G, ws, deltas, direction, torch.zeros(len(chunk)), ws_indices, device)
        if start == 0:
            preview_columns += [sources[:PREVIEW_ROWS], inverted[:PREVIEW_ROWS]]
        for v in range(variants):
            m = torch.from_numpy(magnitudes[start:start + len(chunk), v]).float()
            moved = transform_images(G, ws, deltas, direction, m, ws_indices, device)
            to_source = lpips_distance(alex, sources, moved)
            to_inversion = lpips_distance(alex, inverted, moved)
            rows += [_row(spec, key, labels[key], v, magnitude, d_src, d_inv, options.lpips_threshold)
                     for key, magnitude, d_src, d_inv in zip(chunk, m.tolist(), to_source, to_inversion)]
            images_out.append(moved)
            if start == 0 and v < PREVIEW_VARIANTS:
                preview_columns.append(moved[:PREVIEW_ROWS])
            progress.update(len(chunk))
    progress.close()
    frame = pd.DataFrame(rows)
    write_image_set(out_dir, frame.to_dict("records"), torch.cat(images_out), store.index["labels"])
    _write_preview(out_dir / "preview.png", preview_columns, keys, labels, magnitudes, spec["name"])
    summary = {**_summary(options, frame, alex_info, inversion_dir), "generator": digest, "review": review}
    write_json(out_dir / "transform.json", summary)
    print(f"transform {spec['name']}: {len(frame)} images, mean LPIPS {summary['lpips_mean']:.4f}, "
          f"{summary['rejected']} rejected (> {options.lpips_threshold})", file=sys.stderr)
    return summary


def _write_preview(path: Path, columns: list[torch.Tensor], keys: list[str], labels: dict, magnitudes: np.ndarray,
                   name: str) -> None:
    """preview.png, a labelled `figures.image_grid`: one row per image of the first batch (its key, class and the
    magnitudes of its variants), columns source | inversion | transformed variant 1…; `columns` holds uint8
    (rows, 3, R, R) per column, `magnitudes` (images, variants) the distances in W drawn per image."""
    # deferred: matplotlib only for the preview; planning and the other verbs import this module
    from ..figures import write_image_grid
    rows = len(columns[0])
    variants = len(columns) - 2
    row_labels = [f"{key} ({labels[key]})\nmagnitudes " + ", ".join(f"{m:+.2f}" for m in magnitudes[r, :variants])
                  for r, key in enumerate(keys[:rows])]
    column_labels = ["source", "inversion"] + [f"variant {v + 1}" for v in range(variants)]
    write_image_grid(path, torch.stack(columns, dim=1), row_labels, column_labels,
                     f"transformation {name}: source, its inversion and {variants} transformed variants per image",
                     row_title="image (class), magnitude of each variant (distance in W)")


def _summary(options: TransformOptions, frame: pd.DataFrame, alex_info: dict, inversion_dir) -> dict:
    accepted = frame[frame["accepted"]]
    return {"transformation": options.transformation, "images": len(frame), "accepted": int(len(accepted)),
            "rejected": int((~frame["accepted"]).sum()), "lpips_threshold": options.lpips_threshold,
            "lpips_mean": float(frame["lpips"].mean()), "lpips_std": float(frame["lpips"].std(ddof=0)),
            "lpips_accepted_mean": float(accepted["lpips"].mean()) if len(accepted) else None,
            "lpips_to_inversion_mean": float(frame["lpips_to_inversion"].mean()),
            "lpips": alex_info, "inversion": str(inversion_dir),
            "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}


TABLE1_COLUMNS = ["transformation", "description", "generator", "layer range", "direction", "magnitude",
                  "images", "LPIPS", "LPIPS std", "LPIPS to inversion", "rejected (> threshold)", "rejected %",
                  "transformation kept", "real weights", "data"]


def lpips_table(reports: list[str | Path], data_source: str) -> pd.DataFrame:
    """The HAM10000 study's Table 1: mean LPIPS (AlexNet) per transformation, from the transform reports."""
    rows = []
    for path in reports:
        report = read_report(path, "transformation", "a transform report (transform.json)",
                         "give the transform.json files `dermsynth latent transform` wrote")
        spec = report["transformation"]
        rows.append({"transformation": spec["name"], "description": spec["description"], "generator": spec["gan"],
                     "layer range": spec["layer_range"], "direction": spec["direction"],
                     "magnitude": f"[{spec['magnitude'][0]}, {spec['magnitude'][1]}]", "images": report["images"],
                     "LPIPS": round(report["lpips_mean"], 4), "LPIPS std": round(report["lpips_std"], 4),
                     "LPIPS to inversion": round(report["lpips_to_inversion_mean"], 4),
                     "rejected (> threshold)": report["rejected"],
                     "rejected %": round(100 * report["rejected"] / max(1, report["images"]), 2),
                     "transformation kept": report["lpips_mean"] <= report["lpips_threshold"],
                     "real weights": report["lpips"]["comparable_to_published"], "data": data_source})
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def write_lpips_table(reports, out, data_source: str) -> pd.DataFrame:
    """`lpips_table(reports, data_source)` written atomically as CSV to `out` (Table 1 of the HAM10000 study);
    returns the table. Raises OutputError when `out` cannot be written."""
    table = lpips_table(reports, data_source)
    write_csv(out, table)
    return table


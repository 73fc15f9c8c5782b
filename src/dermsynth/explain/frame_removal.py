"""Frame removal with SeFa (ISIC study, §4.3, Fig. 5): which directions take the dermatoscope's frame away, and
a synthetic set whose frames were taken away.

Why in the explain stage: the experiment asks whether the classifiers' view of malignancy rests on an artifact
(the frame, `frames.py`), and answers it with the explain stage's frame score; the latent stage only lends it its
SeFa directions (`results/latent/<gan>/sefa-<range>.npz`, an input of the job) and `sefa.apply_direction`.

`dermsynth explain frame-directions` (`rank_directions`): N latents of a generator (seeds `seed`…`seed`+N−1, mapped,
truncated) are moved along each of the top K SeFa directions of one layer range, by each magnitude m of a list,
both signs (distance in W along the unit direction, the transformations file's unit). Per (direction, sign,
magnitude), over the N latents:

    frame_drop      = mean(frame score before − after)            (share of the corner ring; > 0: fewer frames)
    lpips_outside   = mean LPIPS-Alex(original, moved with its corner ring replaced by the original's)
    merit           = frame_drop − lpips_weight · lpips_outside

so LPIPS measures what the move changed *outside* the frame ring (the lesion, the skin), not the frame itself.
A (direction, sign) takes its best magnitude: the admissible one (lpips_outside ≤ lpips_max) of highest merit
(ties: lower LPIPS, then the smaller magnitude); pairs are ranked the same way (admissible first, merit, LPIPS).
The proposal keeps the best `choose` pairs of distinct directions. It is written as a *frame-moves file*:

    gan: mal_gan               # the generator the directions belong to
    layer_range: all           # its SeFa layer range
    moves:                     # added together: w + Σ magnitude · direction, in the range's layers
      - {direction: 1, magnitude: -3.0}
      - ...

A reviewer copies it, edits the moves (the Fig. 5 figure shows each; extra keys are ignored) and names the copy in
`explain.frames.file`; the workflow then builds the frameless set from the reviewed file instead of the proposal.

`dermsynth explain frameless-set` (`frameless_set`): per class, latents of that class's generator (seeded, one seed block
per class) whose images have a frame (score ≥ threshold) are moved by the moves, and those whose moved image has no
frame (score < threshold) are kept, until `images` per class. A class whose generator is not the moves' generator
(a benign generator beside the malignant one) cannot be moved along another generator's directions: its images
are kept as generated when they have no frame (moved False). With `framed_only` false (the demo, whose tiny
generators draw no frames), a class that runs out of tries is filled with moved images that had no frame before
(had_frame False); with true that is an error naming the counts. The manifest records per image the frame score
before and after, whether it had a frame, whether it was moved, and the LPIPS outside the ring.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import balanced_accuracy_score

from ..data.lmdb_store import ImageSetWriter, encode_pixels
from ..devices import choose_device
from ..errors import ConfigError, DermsynthError
from ..figures import pyplot as plt
from ..figures import write_image_grid
from ..gan.generate import network_classes
from ..gan.networks import seed_latents
from ..gan.pixels import to_uint8
from ..gan.run import load_generator
from ..latent.named import LAYER_RANGES
from ..latent.sefa import apply_direction
from ..locks import exclusive
from ..metrics.extractors import lpips_alex, lpips_distance
from ..outputs import check_writable, save_figure, write_csv, write_json, write_text
from ..provenance import provenance
from .components import generator_identity, load_npz, recorded, require_made_for
from .frames import corner_ring, frame_scores, score_store

MOVES_REQUIRED = ("gan", "layer_range", "moves")


# --- shared pieces ------------------------------------------------------------------------------------------

def outside_ring(original: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """`moved` with its corner ring (`frames.corner_ring`) replaced by `original`'s: LPIPS between the two
    then sees only what changed inside the inscribed circle."""
    ring = torch.from_numpy(corner_ring(*original.shape[-2:]))
    return torch.where(ring, original, moved)


LPIPS_MIN_SIDE = 64
"""LPIPS-Alex needs images of at least this side (its pooling); smaller images are upsampled (bilinear) first."""


def lpips_outside(model, original: torch.Tensor, moved: torch.Tensor, batch: int) -> np.ndarray:
    """float64 (N,): LPIPS-Alex between uint8 (N, 3, R, R) `original` and `moved` outside the corner ring
    (`outside_ring`), `batch` pairs at a time."""
    first, second = original, outside_ring(original, moved)
    if original.shape[-1] < LPIPS_MIN_SIDE:
        def grow(images):
            return torch.nn.functional.interpolate(images.float(), size=(LPIPS_MIN_SIDE, LPIPS_MIN_SIDE),
                                                   mode="bilinear", align_corners=False).round().to(torch.uint8)
        first, second = grow(first), grow(second)
    device = next(model.parameters()).device
    return lpips_distance(model, first.to(device), second.to(device), batch)


def class_vector(G, class_index: int | None, count: int, device) -> torch.Tensor | None:
    """One-hot conditions for a conditional generator (None for an unconditional one)."""
    if G.c_dim == 0:
        return None
    c = torch.zeros(count, G.c_dim, device=device)
    c[:, class_index or 0] = 1
    return c


def mapped(G, seeds: list[int], class_index: int | None, truncation_psi: float, device) -> torch.Tensor:
    """W+ latents (len(seeds), num_ws, w_dim) of the seeds' z (`gan.networks.seed_latents`)."""
    z = seed_latents(seeds, G.z_dim).to(device)
    with torch.no_grad():
        return G.mapping(z, class_vector(G, class_index, len(seeds), device), truncation_psi=truncation_psi)


def synthesize(G, ws: torch.Tensor, batch: int) -> torch.Tensor:
    """uint8 images of W+ latents (constant noise), `batch` at a time."""
    with torch.no_grad():
        return torch.cat([to_uint8(G.synthesis(ws[i:i + batch], noise_mode="const"))
                          for i in range(0, len(ws), batch)])


def move_vector(directions: np.ndarray, moves: list[dict]) -> torch.Tensor:
    """Σ magnitude · direction (w_dim,) of a list of moves {direction, magnitude}."""
    total = np.zeros(directions.shape[1])
    for move in moves:
        total += float(move["magnitude"]) * directions[int(move["direction"])]
    return torch.from_numpy(total).float()


def class_of(G, network, class_name: str | None) -> tuple[str | None, int | None]:
    """(class name, class index for a conditional generator) for `class_name` (a one-class generator: its class)."""
    classes, trained_on = network_classes(network)
    if G.c_dim > 0:
        if class_name not in classes:
            raise ConfigError(f"{network} is conditional: the class must be one of {', '.join(classes)}, "
                              f"got {class_name!r}")
        return class_name, classes.index(class_name)
    return (trained_on[0] if len(trained_on) == 1 else class_name), None


# --- the frame-moves file (proposal or reviewed) --------------------------------------------------------------

def load_frame_moves(path: str | Path, gan: str | None = None, layer_range: str | None = None) -> dict:
    """A frame-moves file, checked: gan, layer_range, a non-empty list of moves {direction: index ≥ 0,
    magnitude: a number}; with `gan`/`layer_range`, they must match. Raises ConfigError naming each problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"frame-moves file {path} does not exist (explain.frames.file)")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected gan, layer_range and moves")
    problems = [f"{path} lacks '{key}'" for key in MOVES_REQUIRED if key not in spec]
    if not problems:
        if spec["layer_range"] not in LAYER_RANGES:
            problems.append(f"{path}: layer_range {spec['layer_range']!r} is not one of {', '.join(LAYER_RANGES)}")
        if gan is not None and spec["gan"] != gan:
            problems.append(f"{path}: gan {spec['gan']!r} is not explain.frames.gan ({gan})")
        if layer_range is not None and spec["layer_range"] != layer_range:
            problems.append(f"{path}: layer_range {spec['layer_range']!r} is not explain.frames.layer_range "
                            f"({layer_range})")
        moves = spec["moves"]
        if not isinstance(moves, list) or not moves:
            problems.append(f"{path}: moves must be a non-empty list of {{direction, magnitude}}")
        else:
            for i, move in enumerate(moves):
                ok = (isinstance(move, dict) and isinstance(move.get("direction"), int) and move["direction"] >= 0
                      and isinstance(move.get("magnitude"), (int, float)) and not isinstance(move["magnitude"], bool))
                if not ok:
                    problems.append(f"{path}: moves[{i}] needs direction (an eigenvector index ≥ 0) and magnitude "
                                    "(a number; its sign is the side)")
    if problems:
        raise ConfigError("invalid frame-moves file:\n" + "\n".join(f"  - {p}" for p in problems))
    return spec


def write_frame_moves(path: str | Path, gan: str, layer_range: str, chosen: pd.DataFrame, note: str,
                      generator: str = "") -> None:
    """The proposal: a frame-moves file of the chosen rows (direction, magnitude, and their measurements) and,
    when given, `generator`: the identity of the generator whose SeFa directions they move along (frameless-set
    refuses the moves for another generator)."""
    moves = [{"direction": int(row.direction), "magnitude": float(row.magnitude),
              "frame_drop": round(float(row.frame_drop), 4), "lpips_outside": round(float(row.lpips_outside), 4)}
             for row in chosen.itertuples()]
    header = ("# Proposed by `dermsynth explain frame-directions` (see results/explain/frames/<gan>/directions.png).\n"
              "# To override: copy this file (e.g. to config/frame_moves.yaml), edit the moves (direction = SeFa\n"
              "# eigenvector index, magnitude = signed distance in W; the moves are added) and set\n"
              "# explain.frames.file to the copy. frame_drop and lpips_outside are informative only.\n"
              f"# {note}\n")
    spec = {"gan": gan, "layer_range": layer_range, **({"generator": generator} if generator else {}), "moves": moves}
    text = header + yaml.safe_dump(spec, sort_keys=False)
    write_text(path, text)


# --- frame-directions -----------------------------------------------------------------------------------------

def measure_moves(G, ws: torch.Tensor, directions: np.ndarray, ws_indices: list[int], magnitudes: list[float],
                  lpips, threshold: float, batch: int) -> tuple[pd.DataFrame, dict]:
    """One row per (direction index, sign, magnitude) of every row of `directions` (K, w_dim): frame_before,
    frame_after (mean scores), frame_drop, removed (share of framed originals whose frame is gone; NaN without
    any), added (share of frameless originals that gained one; NaN without any), lpips_outside. Also returns
    the original images and their scores {"images", "scores"} (for the figure)."""
    base = synthesize(G, ws, batch)
    before = frame_scores(base.numpy())
    framed = before >= threshold
    rows = []
    for k, vector in enumerate(torch.from_numpy(directions).float()):
        for sign in (-1, 1):
            for m in magnitudes:
                images = synthesize(G, apply_direction(ws, vector.to(ws.device), sign * m, ws_indices), batch)
                after = frame_scores(images.numpy())
                distance = lpips_outside(lpips, base, images, batch)
                gone, gained = framed & (after < threshold), ~framed & (after >= threshold)
                rows.append({"direction": k, "sign": sign, "magnitude": sign * float(m),
                             "frame_before": float(before.mean()), "frame_after": float(after.mean()),
                             "frame_drop": float((before - after).mean()),
                             "removed": float(gone.sum() / framed.sum()) if framed.any() else float("nan"),
                             "added": float(gained.sum() / (~framed).sum()) if (~framed).any() else float("nan"),
                             "lpips_outside": float(distance.mean())})
    return pd.DataFrame(rows), {"images": base, "scores": before}


def rank_moves(table: pd.DataFrame, lpips_weight: float, lpips_max: float,
               choose: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`table` (from `measure_moves`) with merit, admissible, best (the (direction, sign)'s chosen magnitude) and
    rank (of its (direction, sign) pair, 1 = best); and the chosen rows: the best `choose` pairs of distinct
    directions, in rank order."""
    table = table.assign(merit=table["frame_drop"] - lpips_weight * table["lpips_outside"],
                         admissible=table["lpips_outside"] <= lpips_max, order=table["magnitude"].abs())
    ordered = table.sort_values(["admissible", "merit", "lpips_outside", "order", "direction", "sign"],
                                ascending=[False, False, True, True, True, True], kind="mergesort")
    best = ordered.drop_duplicates(["direction", "sign"])  # each pair's best magnitude, pairs in rank order
    ranks = {(row.direction, row.sign): i + 1 for i, row in enumerate(best.itertuples())}
    table["rank"] = [ranks[(d, s)] for d, s in zip(table["direction"], table["sign"])]
    table["best"] = table.index.isin(best.index)
    chosen = best.drop_duplicates("direction").head(choose)
    return table.drop(columns="order"), table.loc[chosen.index]


def moves_figure(G, ws: torch.Tensor, directions: np.ndarray, ws_indices: list[int], chosen: pd.DataFrame,
                 magnitudes: list[float], out_png: str | Path, batch: int) -> None:
    """Fig. 5: rows = chosen (direction, sign), columns = −max…−min, original, +min…+max along the direction, of
    one latent (`ws`, (1, num_ws, w_dim)); each row titled with its direction and chosen magnitude."""
    steps = sorted({-float(m) for m in magnitudes}) + [0.0] + sorted({float(m) for m in magnitudes})
    rows = []
    for row in chosen.itertuples():
        vector = torch.from_numpy(directions[int(row.direction)]).float()
        moved = apply_direction(ws.repeat(len(steps), 1, 1), vector, torch.tensor(steps), ws_indices)
        rows.append(synthesize(G, moved, batch))
    n_rows, n_cols = max(1, len(rows)), len(steps)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.45 * n_rows + 0.3), dpi=120, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if r < len(rows):
                image = rows[r][c]
                ax.imshow(image.permute(1, 2, 0).numpy())
                score = frame_scores(image[None].numpy())[0]
                title = "original" if steps[c] == 0 else f"{steps[c]:+g}"
                ax.set_title(f"{title}\nframe {score:.2f}", fontsize=6)
        if r < len(rows):
            pick = chosen.iloc[r]
            axes[r][0].text(-0.15, 0.5, f"direction {int(pick['direction'])}\nchosen {pick['magnitude']:+g}",
                            transform=axes[r][0].transAxes, ha="right", va="center", fontsize=6)
    fig.suptitle("Frame removal along SeFa directions (columns: magnitude in W)", fontsize=8)
    fig.tight_layout()
    save_figure(out_png, fig)
    plt.close(fig)


def run_frame_directions(options, network, sefa_npz, out_csv, out_figure, out_proposal, device=None) -> dict:
    """`dermsynth explain frame-directions`: measure (`measure_moves`) the top `options.directions` directions of
    `sefa_npz` on `options.latents` latents of `network`, rank them (`rank_moves`), write the table `out_csv`
    (one row per direction, sign, magnitude), the Fig. 5 figure `out_figure` (of the latent with the highest
    frame score), the proposal `out_proposal` (a frame-moves file) and a summary JSON beside the CSV.
    Raises ConfigError when the SeFa file has fewer directions than asked for; StateMismatchError when it was
    made for another generator (by the identity of its weights); WrongFileError for a file of another kind;
    BusyError/OutputError when another process writes `out_csv` or its folder is not writable."""
    device = choose_device(device)
    G = load_generator(network, device)
    factors = load_sefa(sefa_npz, G, network)
    if len(factors["directions"]) < options.directions:
        raise ConfigError(f"{sefa_npz} has {len(factors['directions'])} directions; "
                          f"explain.frames.directions asks for {options.directions}")
    for folder in {Path(p).parent for p in (out_csv, out_figure, out_proposal)}:
        check_writable(folder)
    with exclusive(out_csv, "frame-directions"):
        return _frame_directions(options, network, G, factors, out_csv, out_figure, out_proposal, device)


def load_sefa(sefa_npz, G, network) -> dict:
    """The SeFa directions of `sefa_npz` (directions, ws_indices, …) when they were made for generator `G`
    (`network`). Raises WrongFileError (not a SeFa file) or StateMismatchError (another generator's)."""
    factors = load_npz(sefa_npz, "SeFa directions (sefa-<range>.npz of `dermsynth latent sefa`)",
                       "give the .npz that `dermsynth latent sefa` wrote for this generator", ("directions", "ws_indices"))
    require_made_for(sefa_npz, recorded(factors, "generator"), generator_identity(G), network,
                     f"factorise {network} (`dermsynth latent sefa`)")
    return factors


def _frame_directions(options, network, G, factors: dict, out_csv, out_figure, out_proposal, device) -> dict:
    directions, ws_indices = factors["directions"][:options.directions], factors["ws_indices"].tolist()
    class_name, class_index = class_of(G, network, options.class_name)
    seeds = list(range(options.seed, options.seed + options.latents))
    ws = mapped(G, seeds, class_index, options.truncation_psi, device)
    lpips, lpips_info = lpips_alex()
    lpips = lpips.to(device)
    measured, originals = measure_moves(G, ws, directions, ws_indices, list(options.magnitudes), lpips,
                                        options.threshold, options.batch)
    table, chosen = rank_moves(measured, options.lpips_weight, options.lpips_max, options.choose)
    write_csv(out_csv, table)
    example = int(np.argmax(originals["scores"]))
    moves_figure(G, ws[example:example + 1], directions, ws_indices, chosen, list(options.magnitudes), out_figure,
                 options.batch)
    framed = int((originals["scores"] >= options.threshold).sum())
    note = (f"{framed} of {len(seeds)} latents had a frame; best frame drop {chosen['frame_drop'].max():.4f}"
            if len(chosen) else "nothing chosen")
    if framed == 0:
        note += " — no latent had a frame: the ranking is by LPIPS alone, review before use"
    write_frame_moves(out_proposal, options.gan, options.layer_range, chosen, note, generator_identity(G))
    summary = {"gan": options.gan, "class": class_name, "layer_range": options.layer_range, "latents": len(seeds),
               "framed_latents": framed, "threshold": options.threshold, "lpips": lpips_info,
               "chosen": chosen[["direction", "magnitude", "frame_drop", "removed", "lpips_outside", "merit"]]
               .to_dict("records"), "note": note, "example_latent_seed": seeds[example],
               "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}
    write_json(Path(out_csv).with_suffix(".json"), summary)
    print(f"frame-directions {options.gan}: {note}; chosen "
          + ", ".join(f"{int(r.direction)}:{r.magnitude:+g}" for r in chosen.itertuples()), file=sys.stderr)
    return summary


# --- frameless-set --------------------------------------------------------------------------------------------

def _frameless_class(G, network, class_name, class_index, seeds_start, moves_vector, ws_indices, options, lpips,
                     device) -> tuple[list[dict], list[torch.Tensor], dict]:
    """Rows and images of one class's frameless images (see the module docstring), and its counts."""
    wanted, limit, framed_only = options.images, options.images * options.tries_per_image, options.framed_only
    kept_rows, kept_images, spare_rows, spare_images = [], [], [], []
    tried = framed_total = 0
    while len(kept_rows) < wanted and tried < limit:
        seeds = list(range(seeds_start + tried, seeds_start + min(limit, tried + options.batch)))
        tried += len(seeds)
        ws = mapped(G, seeds, class_index, options.truncation_psi, device)
        before_images = synthesize(G, ws, options.batch)
        before = frame_scores(before_images.numpy())
        framed_total += int((before >= options.threshold).sum())
        if moves_vector is None:
            after_images, after, distance = before_images, before, np.zeros(len(seeds))
        else:
            after_images = synthesize(G, apply_direction(ws, moves_vector.to(device), 1.0, ws_indices), options.batch)
            after = frame_scores(after_images.numpy())
            distance = lpips_outside(lpips, before_images, after_images, options.batch)
        for i, seed in enumerate(seeds):
            had, gone = bool(before[i] >= options.threshold), bool(after[i] < options.threshold)
            row = {"key": f"{Path(network).parent.name}-{class_name}-frameless-seed{seed:08d}", "label": class_name,
                   "split": "train", "seed": seed, "network": str(network), "truncation_psi": options.truncation_psi,
                   "source_key": "", "frame_score_before": round(float(before[i]), 6),
                   "frame_score_after": round(float(after[i]), 6), "had_frame": had,
                   "moved": moves_vector is not None, "lpips_outside": round(float(distance[i]), 6)}
            if gone and (had or moves_vector is None) and len(kept_rows) < wanted:
                kept_rows.append(row)
                kept_images.append(after_images[i])
            elif gone and not had and len(spare_rows) < wanted:
                spare_rows.append(row)
                spare_images.append(after_images[i])
    found = len(kept_rows)
    if found < wanted:
        if framed_only and moves_vector is not None:
            raise DermsynthError(f"frameless-set {class_name}: {found} of {wanted} framed images lost their frame in "
                                 f"{tried} tries ({framed_total} had a frame); raise explain.frames.tries_per_image, "
                                 "review the moves, or set explain.frames.framed_only: false")
        if len(spare_rows) < wanted - found:
            raise DermsynthError(f"frameless-set {class_name}: only {found + len(spare_rows)} of {wanted} frameless "
                                 f"images in {tried} tries; raise explain.frames.tries_per_image")
        kept_rows += spare_rows[:wanted - found]
        kept_images += spare_images[:wanted - found]
    counts = {"images": wanted, "tried": tried, "framed_generated": framed_total, "framed_kept": found
              if moves_vector is not None else 0, "filled_without_frame": wanted - found if moves_vector is not None
              else wanted, "moved": moves_vector is not None}
    return kept_rows, kept_images, counts


def frameless_set(options, networks: dict[str, str], sefa_npz, moves_file, out_dir, device=None) -> dict:
    """`dermsynth explain frameless-set`: `options.images` frameless images per class of `options.generators` (class →
    generator name; `networks`: class → checkpoint), the classes of generator `options.gan` moved by the moves of
    `moves_file` (SeFa directions of `sefa_npz`), into `out_dir` (lmdb/ + manifest.csv, binary labels),
    frameless.json (counts per class, the moves, provenance) and preview.png (before | after of moved images).
    Raises ConfigError for a moves file of another generator or layer range, StateMismatchError when the SeFa
    file or the moves file records another generator than the moved class's (by the identity of its weights),
    DermsynthError when a class falls short (see the module docstring), BusyError/OutputError when another
    process writes `out_dir` or it is not writable."""
    device = choose_device(device)
    spec = load_frame_moves(moves_file, options.gan, options.layer_range)
    moved = [name for name, gan in options.generators.items() if gan == options.gan and name in networks]
    factors = None
    for class_name in moved:  # the moves' generator: its SeFa file and moves file must be made for it
        G = load_generator(networks[class_name], device)
        factors = load_sefa(sefa_npz, G, networks[class_name])
        if spec.get("generator"):
            require_made_for(moves_file, spec["generator"], generator_identity(G),
                             networks[class_name], "run frame-directions for it again")
    if factors is None:
        factors = load_npz(sefa_npz, "SeFa directions (sefa-<range>.npz of `dermsynth latent sefa`)",
                           "give the .npz that `dermsynth latent sefa` wrote", ("directions", "ws_indices"))
    out_dir = check_writable(out_dir)
    with exclusive(out_dir, "frameless-set"):
        return _frameless_set(options, networks, factors, spec, sefa_npz, moves_file, out_dir, device)


def _frameless_set(options, networks: dict[str, str], factors: dict, spec: dict, sefa_npz, moves_file, out_dir,
                   device) -> dict:
    if max(m["direction"] for m in spec["moves"]) >= len(factors["directions"]):
        raise ConfigError(f"{moves_file}: a direction is beyond the {len(factors['directions'])} of {sefa_npz}")
    vector, ws_indices = move_vector(factors["directions"], spec["moves"]), factors["ws_indices"].tolist()
    missing = sorted(set(options.generators) - set(networks))
    if missing:
        raise DermsynthError(f"frameless-set: no generator given for class(es) {', '.join(missing)} "
                             "(--network <class>=<network-final.pt>)")
    lpips, lpips_info = lpips_alex()
    lpips = lpips.to(device)
    writer = ImageSetWriter(out_dir)
    rows, counts, preview, preview_rows, resolution = [], {}, [], [], None
    for i, (class_name, gan) in enumerate(options.generators.items()):
        G = load_generator(networks[class_name], device)
        _, class_index = class_of(G, networks[class_name], class_name)
        moves = vector if gan == options.gan else None
        start = options.seed + 10_000_000 * i
        kept, images, counts[class_name] = _frameless_class(G, networks[class_name], class_name, class_index, start,
                                                            moves, ws_indices, options, lpips, device)
        writer.add_many([(row["key"], encode_pixels(image.permute(1, 2, 0).numpy(), "png"))
                         for row, image in zip(kept, images)])
        rows += kept
        resolution = G.img_resolution
        if moves is not None and kept:
            seeds = [row["seed"] for row in kept[:8]]
            before = synthesize(G, mapped(G, seeds, class_index, options.truncation_psi, device), options.batch)
            preview.append(torch.stack([before, torch.stack(images[:8])], dim=1))
            preview_rows += [f"{class_name}, seed {seed}" for seed in seeds]
    manifest = pd.DataFrame(rows)
    writer.finish(manifest, "binary", resolution)
    if preview:
        write_image_grid(Path(out_dir) / "preview.png", torch.cat(preview), preview_rows,
                         ["generated", "frame removed"],
                         f"frameless set: generated images before and after the frame-removing moves of {options.gan}",
                         row_title="class, seed")
    summary = {"gan": options.gan, "moves_file": str(moves_file), "moves": spec["moves"],
               "layer_range": spec["layer_range"], "threshold": options.threshold, "per_class": counts,
               "lpips": lpips_info, "lpips_outside_mean": float(manifest.loc[manifest["moved"], "lpips_outside"].mean())
               if manifest["moved"].any() else 0.0,
               "provenance": provenance(options.step, options.to_dict(), seed=options.seed)}
    write_json(Path(out_dir) / "frameless.json", summary)
    print(f"frameless-set: {manifest.groupby('label').size().to_dict()} images; per class {counts}", file=sys.stderr)
    return summary


# --- frame accuracy of the ISIC classifiers -----------------------------------------------------------------

def frame_accuracy_table(models: list[str | Path], lmdb_root, manifest, threshold: float,
                         batch: int) -> pd.DataFrame:
    """Per ISIC model folder (metrics.json + predictions-test.csv): accuracy and balanced accuracy on the real
    test images with a frame (score ≥ threshold) and without, their counts, and the difference (with − without)."""

    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    scored = score_store(lmdb_root, rows[rows["split"] == "test"], batch=batch, threshold=threshold)
    framed = dict(zip(scored["key"], scored["has_frame"]))
    out = []
    for folder in map(Path, models):
        info = json.loads((folder / "metrics.json").read_text())
        predictions = pd.read_csv(folder / "predictions-test.csv", dtype={"key": str, "label": str, "predicted": str})
        unknown = sorted(set(predictions["key"]) - set(framed))
        if unknown:
            raise DermsynthError(f"{folder}: test predictions for images not in the test split ({unknown[:3]})")
        with_frame = predictions["key"].map(framed).astype(bool)
        row = {"scenario": info["scenario"], "architecture": info["architecture"]}
        for name, part in (("with frame", predictions[with_frame]), ("without frame", predictions[~with_frame])):
            row[f"images {name}"] = len(part)
            row[f"accuracy {name}"] = round(float((part["label"] == part["predicted"]).mean()), 4) if len(part) else None
            row[f"balanced accuracy {name}"] = _balanced(part)
        a, b = row["accuracy with frame"], row["accuracy without frame"]
        row["accuracy difference"] = None if a is None or b is None else round(a - b, 4)
        row["threshold"] = threshold
        out.append(row)
    return pd.DataFrame(out)


def _balanced(part: pd.DataFrame) -> float | None:
    """Balanced accuracy of `part`'s `predicted` against its `label`, rounded to 4 places (None when it is empty):
    scikit-learn's `balanced_accuracy_score`, the mean recall over the classes present in `label`."""
    if not len(part):
        return None
    with warnings.catch_warnings():  # a subset (e.g. the framed images) often lacks a class that was predicted
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        return round(float(balanced_accuracy_score(part["label"], part["predicted"])), 4)


def run_frame_accuracy(options, models, lmdb_root, manifest, out_csv) -> pd.DataFrame:
    """`dermsynth explain frame-accuracy`: `frame_accuracy_table` written to `out_csv` (with a JSON of provenance beside it)."""
    table = frame_accuracy_table(models, lmdb_root, manifest, options.threshold, options.batch)
    write_csv(out_csv, table)
    write_json(Path(out_csv).with_suffix(".json"), {"models": [str(m) for m in models],
                                                    "threshold": options.threshold,
                                                    "provenance": provenance(options.step, options.to_dict())})
    print(table.to_string(index=False), file=sys.stderr)
    return table

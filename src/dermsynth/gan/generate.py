"""`dermsynth gan generate`: images from a trained generator, by seed, as PNG files or an LMDB store.

Each image's latent is drawn from its own seed (`numpy.random.RandomState(seed)`), so an image
does not depend on the batch size or on which other seeds are generated with it (up to floating-point
rounding: the convolution backend may pick another algorithm for another batch shape, ±1 grey level). An LMDB output
is a store like the ingested ones (same reader, `index.json`) plus `manifest.csv` rows with the
key, label, seed, truncation and network, ready to be concatenated with a real training split.

A PNG output folder holds exactly the images its `manifest.csv` lists: every PNG is written under a temporary
name and renamed, the manifest last (a killed call leaves complete PNGs and no manifest; run it again), and a
folder holding PNG files this call would not write is refused rather than mixed. `generate` holds a lock on its
output (one writer), and the output folder is proven writable before any image is made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from ..data.lmdb_store import ImageSetWriter, encode_pixels
from ..devices import choose_device
from ..errors import DermsynthError
from ..locks import exclusive
from ..outputs import check_writable, write_csv, write_json, write_png
from ..progress import Progress
from ..provenance import provenance
from .networks import seed_latents
from .pixels import to_uint8
from .run import load_generator


def parse_seeds(text: str) -> list[int]:
    """'0-99,200,300-301' → [0, …, 99, 200, 300, 301]. Raises DermsynthError for a part that is not a number
    or range, an empty range, or a seed given twice (it would name two images alike)."""
    seeds = []
    for part in text.split(","):
        start, _, end = part.strip().partition("-")
        try:
            seeds += list(range(int(start), int(end or start) + 1))
        except ValueError:
            raise DermsynthError(f"--seeds {text!r}: {part.strip()!r} is not a seed or a range like 0-99") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}) if len(set(seeds)) != len(seeds) else []
    if repeated:
        raise DermsynthError(f"--seeds {text!r} names seed(s) {repeated[:5]} more than once; give each seed once")
    if not seeds:
        raise DermsynthError(f"--seeds {text!r} names no seed (a range like 9-0 is empty)")
    return seeds


def network_classes(network: str | Path) -> tuple[list[str], list[str]]:
    """(classes of the dataset, classes the generator was trained on) from network-final.json."""
    info_path = Path(network).with_suffix(".json")
    if not info_path.exists():
        return [], []
    info = json.loads(info_path.read_text())
    return info.get("classes", []), info.get("trained_on_classes", [])


@torch.no_grad()
def generate_images(G, seeds: list[int], truncation_psi: float = 1.0, class_index: int | None = None,
                    batch: int = 32, device: str | torch.device = "cpu", noise_mode: str = "const") -> torch.Tensor:
    """uint8 images (N, 3, R, R) on the CPU for `seeds` (z from each seed, `seed_latents`), `batch` at a time on
    `device`; `class_index` (required for a conditional G) is the one-hot class. Raises ValueError without it."""
    if G.c_dim > 0 and class_index is None:
        raise ValueError("this generator is conditional: give the class to generate")
    G = G.to(device)
    out = []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start:start + batch]
        z = seed_latents(chunk, G.z_dim).to(device)
        c = None
        if G.c_dim > 0:
            c = torch.zeros(len(chunk), G.c_dim, device=device)
            c[:, class_index] = 1
        images = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
        out.append(to_uint8(images))
    return torch.cat(out)


def sample_sheet(network: str | Path, out_png: str | Path, columns: int = 8, rows: int = 4,
                 truncation_psi: float = 1.0, device: str | None = None) -> dict:
    """A labelled picture of the final generator (+ a JSON beside it naming the rows): seeds 0…columns−1 in each
    row; a conditional generator gets one row per class (in the dataset's class order, the same seeds in
    every row, each row labelled with its class and each column with its seed), others `rows` rows of
    consecutive seeds (each row labelled with its seeds, each column with the seed's offset in the row). The
    title names the network, its kimg (from the network's .json, when there is one) and ψ."""
    device = choose_device(device)
    G = load_generator(network, device)
    check_writable(Path(out_png).parent)
    classes, trained_on = network_classes(network)
    if G.c_dim > 0:
        sheet = [generate_images(G, list(range(columns)), truncation_psi, index, columns, device)
                 for index in range(G.c_dim)]
        row_names = classes or [f"class {index}" for index in range(G.c_dim)]
    else:
        sheet = list(generate_images(G, list(range(rows * columns)), truncation_psi, None, columns, device)
                     .reshape(rows, columns, 3, G.img_resolution, G.img_resolution))
        row_names = [f"seeds {r * columns}–{(r + 1) * columns - 1}" for r in range(rows)]
    # deferred: matplotlib (½ s) only for the sheet; `generate` jobs import this module without drawing
    from ..figures import write_image_grid
    if G.c_dim > 0:
        column_labels, column_title = [f"seed {seed}" for seed in range(columns)], "seed"
    else:
        column_labels, column_title = [f"+{j}" for j in range(columns)], "seed = the row's first seed + column"
    write_image_grid(out_png, torch.stack(sheet), row_names, column_labels,
                     f"samples of {_network_title(network)}, ψ={truncation_psi:g}"
                     + (f" (unconditional, trained on {', '.join(trained_on)})" if G.c_dim == 0 and trained_on else ""),
                     row_title="class" if G.c_dim > 0 else "seeds", column_title=column_title)
    settings = {"columns": columns, "rows": rows, "truncation_psi": truncation_psi}
    summary = {"network": str(network), "rows": row_names, "columns": columns, "truncation_psi": truncation_psi,
               "provenance": provenance("sample-sheet", settings)}
    write_json(Path(out_png).with_suffix(".json"), summary)
    return summary


def _network_title(network: str | Path) -> str:
    """'<gan>/<file> (<kimg> kimg)' of a generator file; the kimg from its .json beside it, when there is one."""
    network = Path(network)
    info_path = network.with_suffix(".json")
    kimg = json.loads(info_path.read_text()).get("kimg") if info_path.exists() else None
    return f"{network.parent.name}/{network.name}" + (f" ({kimg:g} kimg)" if kimg is not None else "")


def generate(network: str | Path, seeds: list[int], out: str | Path, *, truncation_psi: float, batch: int,
             class_name: str | None = None, fmt: str = "png", labels: str | None = None,
             device: str | None = None) -> Path:
    """Images of `network` for `seeds` into `out`: PNG files + manifest.csv (`fmt` png) or an image set (lmdb/ +
    manifest.csv + generate.json), `batch` seeds per forward pass, at `truncation_psi` (1: none; the verb's flags
    `--truncation`, `--batch`). Returns `out`.

    Raises:
        WrongFileError: `network` is not a generator checkpoint.
        ValueError: the class is missing for a conditional generator, or not one of its classes.
        BusyError: another process is writing `out`.
        OutputError: `out` cannot be written (read-only, no permission, disk full).
        DermsynthError: a PNG `out` already holds PNG files this call would not write."""
    device = choose_device(device)
    G = load_generator(network, device)
    classes, trained_on = network_classes(network)
    class_index = None
    if G.c_dim > 0:
        if not classes:
            raise ValueError(f"{network}: a conditional generator of {G.c_dim} classes whose names are not recorded "
                             f"beside it ({Path(network).with_suffix('.json').name}, which travels with the network): "
                             "an imported one is named with `dermsynth gan import … --classes NAME,…`")
        if class_name is None:
            raise ValueError(f"this generator is conditional: give the class to generate with --class (one of "
                             f"{', '.join(classes)})")
        if class_name not in classes:
            raise ValueError(f"class {class_name!r} is not one of the generator's classes {classes}")
        class_index = classes.index(class_name)
    elif class_name is None and len(trained_on) == 1:
        class_name = trained_on[0]  # a one-class generator (ben-GAN, mal-GAN) makes that class
    out = Path(out)
    rows = [{"key": f"{Path(network).parent.name}-seed{seed:07d}", "label": class_name or "", "seed": seed,
             "truncation_psi": truncation_psi, "network": str(network), "split": "train"} for seed in seeds]
    if fmt == "png":
        check_writable(out)
        with exclusive(out, "generate"):
            _refuse_foreign_pngs(out, {f"{row['key']}.png" for row in rows})
            images = generate_images(G, seeds, truncation_psi, class_index, batch, device)
            for row, image in zip(rows, images):
                write_png(out / f"{row['key']}.png", image.permute(1, 2, 0).numpy())
            write_csv(out / "manifest.csv", pd.DataFrame(rows))  # last: it lists exactly the PNGs written
        return out
    check_writable(out.parent)
    with exclusive(out.with_name(f".{out.name}.generate"), "generate"):  # beside: the set replaces `out` whole
        images = generate_images(G, seeds, truncation_psi, class_index, batch, device)
        write_image_set(out, rows, images, labels or ("binary" if set(classes) == {"benign", "malignant"} else "ham7"))
        write_json(out / "generate.json", {"network": str(network), "images": len(rows), "class": class_name,
                                           "truncation_psi": truncation_psi,
                                           "provenance": provenance("generate",
                                                                    {"seeds": [seeds[0], seeds[-1], len(seeds)]})})
    return out


def _refuse_foreign_pngs(out: Path, names: set[str]) -> None:
    """A PNG folder must end up holding exactly the manifest's images: PNG files there that this call would not
    write (another generator's, other seeds) are refused in one line rather than mixed in."""
    foreign = sorted(p.name for p in out.rglob("*.png") if p.relative_to(out).as_posix() not in names)
    if foreign:
        raise DermsynthError(f"{out} already holds {len(foreign)} PNG file(s) this call would not write (e.g. "
                             f"{', '.join(foreign[:3])}); its manifest.csv could not list exactly its images: "
                             "write to an empty or new --out folder, or remove those files")


def write_image_set(out: Path, rows: list[dict], images: torch.Tensor, labels: str) -> None:
    """uint8 images (N, 3, R, R) with one manifest row each → an image set folder (lmdb/ + manifest.csv)."""
    writer = ImageSetWriter(out)
    writer.add_many([(row["key"], encode_pixels(image.permute(1, 2, 0).numpy(), "png"))
                     for row, image in zip(rows, images)])
    writer.finish(pd.DataFrame(rows), labels, images.shape[-1])


def generate_plan_to_lmdb(plan: list[dict], out: str | Path, labels: str, truncation_psi: float,
                          batch: int = 64, device: str | None = None) -> pd.DataFrame:
    """Stream images of several (network, class, seeds) parts into one LMDB store (memory stays one batch).

    plan: [{"network": path, "class": name, "seeds": [..]}]; a conditional network gets the class, a
    one-class network makes its own. Keys are '<network folder>-<class>-seed<seed>'."""
    device = choose_device(device)
    writer = ImageSetWriter(out)
    rows, resolution = [], None
    progress = Progress(sum(len(part["seeds"]) for part in plan), f"generate {Path(out).name}")
    for part in plan:
        G = load_generator(part["network"], device)
        classes, _ = network_classes(part["network"])
        class_index = classes.index(part["class"]) if G.c_dim > 0 else None
        for start in range(0, len(part["seeds"]), batch):
            seeds = part["seeds"][start:start + batch]
            images = generate_images(G, seeds, truncation_psi, class_index, batch, device)
            resolution = int(images.shape[-1])
            items = []
            for seed, image in zip(seeds, images):
                key = f"{Path(part['network']).parent.name}-{part['class']}-seed{seed:08d}"
                items.append((key, encode_pixels(image.permute(1, 2, 0).numpy(), "png")))
                rows.append({"key": key, "label": part["class"], "split": "train", "seed": seed,
                             "network": str(part["network"]), "truncation_psi": truncation_psi, "source_key": ""})
            writer.add_many(items)
            progress.update(len(seeds))
    progress.close()
    frame = pd.DataFrame(rows)
    writer.finish(frame, labels, resolution)
    return frame

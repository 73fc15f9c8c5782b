"""What the review page shows, computed without a UI: generators with SeFa outputs, their directions, a
source latent (a sample, a dataset image, an upload), the edited image and its LPIPS (AlexNet) to the source.

Images are uint8 tensors (3, R, R) (or (N, 3, R, R)) at the generator's resolution R; latents are W+
(1, num_ws, w_dim) float32 with HyperStyle kernel offsets {layer: Δ (1, out, in)} where the source was
inverted with a hypernetwork. Edits move the latent by magnitude × the unit direction in the layer range's
ws indices and re-synthesise with constant noise and the source's offsets — `transform_images`, the code the
`transform` rule runs — and LPIPS is `lpips_alex` + `lpips_distance`, the code of Table 1.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from ..config import schema_defaults
from ..data.dataset import read_images
from ..data.images import ImageRejected, decode_image
from ..errors import DermsynthError
from ..fingerprint import store_identity
from ..gan.pixels import render_ws, to_uint8
from ..gan.run import load_generator
from ..latent.encoders import deltas_from_factors
from ..latent.identity import generator_digest
from ..latent.inversion import invert
from ..latent.named import LAYER_RANGES
from ..latent.project import ProjectionOptions, project
from ..latent.run_inversion import StoredInversion, load_e4e, load_hyperstyle
from ..latent.sefa import apply_direction
from ..latent.transform import at_resolution, transform_images
from ..metrics.extractors import lpips_alex, lpips_distance, lpips_model
from ..outputs import tile

UPLOAD_MAX_PIXELS = 40_000_000   # an upload above this (width × height) is refused before decoding
UPLOAD_MAX_BYTES = 50 * 2 ** 20  # and above 50 MB (Streamlit's server.maxUploadSize is set to the same)


class UploadRejected(DermsynthError):
    """An uploaded file that is not a usable image; the message says why and what to do."""


class NoEncoder(DermsynthError):
    """The generator has no usable e4e encoder; the message says why and how to train one."""


@dataclass
class GeneratorInfo:
    """A generator under `results/gan/<name>/network-final.pt` with SeFa files for `layer_ranges`."""
    name: str
    network: Path
    layer_ranges: list[str]


@dataclass
class Directions:
    """One SeFa file: `directions` (K, w_dim) float32 unit rows sorted by `eigenvalues` (K,) float64,
    descending; `ws_indices` are the W+ rows the layer range moves."""
    gan: str
    layer_range: str
    directions: np.ndarray
    eigenvalues: np.ndarray
    ws_indices: list[int]
    layer_names: list[str]

    def vector(self, index: int) -> torch.Tensor:
        """Direction `index` as a float32 (w_dim,) tensor. Raises IndexError for an index ≥ K or < 0."""
        if not 0 <= index < len(self.directions):
            raise IndexError(f"direction {index} does not exist ({len(self.directions)} directions)")
        return torch.from_numpy(np.asarray(self.directions[index], dtype=np.float32))


@dataclass
class Source:
    """The image a direction is tried on: `image` (the reference LPIPS is measured to: the real image, or
    the sample itself), `inversion` (its reconstruction from `ws`/`deltas`), how it was obtained (`method`:
    sample, stored inversion, e4e + HyperStyle, e4e, projection) and a `label` for the page."""
    label: str
    method: str
    image: torch.Tensor                       # (3, R, R) uint8
    inversion: torch.Tensor                   # (3, R, R) uint8
    ws: torch.Tensor                          # (1, num_ws, w_dim) float32
    deltas: dict = field(default_factory=dict)  # {layer: (1, out, in) float32}
    noise: list | None = None                 # projection's optimised noise maps, one (1, 1, r, r) per layer
    seed: int | None = None                   # a sample's seed (None for a real image)


@dataclass
class Edit:
    """One rendered edit: `image` (3, R, R) uint8, LPIPS to the source and to the inversion, whether it is
    wayward (LPIPS to the source > threshold) and the seconds the render took (synthesis + LPIPS)."""
    image: torch.Tensor
    magnitude: float
    lpips_to_source: float
    lpips_to_inversion: float
    wayward: bool
    seconds: float


def list_generators(root: str | Path = ".") -> list[GeneratorInfo]:
    """Generators under `root`/results/gan with a final checkpoint and at least one SeFa file, by name."""
    root = Path(root)
    out = []
    for network in sorted((root / "results" / "gan").glob("*/network-final.pt")):
        name = network.parent.name
        ranges = [r for r in LAYER_RANGES if (root / "results" / "latent" / name / f"sefa-{r}.npz").exists()]
        if ranges:
            out.append(GeneratorInfo(name, network, ranges))
    return out


def load_directions(root: str | Path, gan: str, layer_range: str) -> Directions:
    """The SeFa file results/latent/<gan>/sefa-<layer_range>.npz (written by `dermsynth latent sefa`).

    Raises FileNotFoundError when it does not exist."""
    path = Path(root) / "results" / "latent" / gan / f"sefa-{layer_range}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `snakemake {path}` first")
    with np.load(path) as data:
        return Directions(gan, layer_range, data["directions"].astype(np.float32),
                          data["eigenvalues"].astype(np.float64), [int(i) for i in data["ws_indices"]],
                          [str(n) for n in data["layer_names"]])


def decode_upload(data: bytes, name: str, resolution: int, ingest: dict) -> torch.Tensor:
    """An uploaded file's bytes → uint8 (3, resolution, resolution), with ingest's preprocessing
    (`decode_image`: EXIF orientation, colour mode to 8-bit RGB, centre square, Lanczos resize) and settings
    (`ingest`: the config's `ingest` section, whose `grayscale` and `jpeg_draft` are read).

    Nothing is written to disk (the name is only used in messages). Raises UploadRejected for an empty or
    too large file, more than UPLOAD_MAX_PIXELS pixels (checked from the header, before decoding: a
    decompression bomb), a file that is not an image, a damaged one, or a pixel mode that cannot be
    turned into RGB (grayscale unless `ingest.grayscale` is 'replicate')."""

    shown = Path(str(name)).name or "upload"
    if not data:
        raise UploadRejected(f"{shown}: the file is empty")
    if len(data) > UPLOAD_MAX_BYTES:
        raise UploadRejected(f"{shown}: {len(data) / 2 ** 20:.0f} MB is more than the {UPLOAD_MAX_BYTES // 2 ** 20} MB "
                             "an upload may have")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        width = height = None  # decode_image names what it is
    if width is not None and width * height > UPLOAD_MAX_PIXELS:
        raise UploadRejected(f"{shown}: {width}×{height} pixels is more than the {UPLOAD_MAX_PIXELS // 10 ** 6} "
                             "megapixels an upload may have (a decompression bomb, or a scan far larger than a "
                             "dermoscopic image); downscale it first")
    try:
        decoded = decode_image(data, resolution, ingest["grayscale"], ingest["jpeg_draft"], name=shown)
    except ImageRejected as exc:
        raise UploadRejected(f"{shown}: {exc.message}") from None
    return torch.from_numpy(np.array(decoded.pixels, copy=True)).permute(2, 0, 1).contiguous()


class ReviewEngine:
    """One generator loaded for review (on `device`), with the LPIPS (AlexNet) of Table 1 and, when
    trained, its e4e encoder and HyperStyle hypernetwork. `cfg` (the validated workflow config, optional) supplies
    the generator's dataset, the stored inversion's dataset, the LPIPS threshold (`latent.transform`), the ingest
    settings of uploads (`ingest`) and the projection settings (`latent.projection`); without it (no config
    file) those three sections are the schema's defaults (`section`)."""

    def __init__(self, root: str | Path, gan: str, cfg: dict | None = None, device: str = "cpu"):
        self.root, self.gan, self.cfg, self.device = Path(root), gan, cfg or {}, torch.device(device)
        self.network = self.root / "results" / "gan" / gan / "network-final.pt"
        if not self.network.exists():
            raise FileNotFoundError(f"{self.network} not found: train the generator first (snakemake {self.network})")
        self.G = load_generator(self.network, self.device)
        self.resolution = int(self.G.img_resolution)
        self.lpips, self.lpips_info = lpips_alex()
        self.lpips = self.lpips.to(self.device)
        self.threshold = float(self.section("latent.transform")["lpips_threshold"])
        self.latent_dir = self.root / "results" / "latent" / gan
        self._encoder = self._hyper = self._vgg = None
        self._hyper_problem, self._encoder_problem = "", (None, "")
        self._stored = None
        self._digest = None

    @property
    def digest(self) -> str:
        """`latent.identity.generator_digest` of the loaded generator (what a review records; computed once)."""
        if self._digest is None:
            self._digest = generator_digest(self.G)
        return self._digest

    def section(self, path: str) -> dict:
        """The config section at dotted `path` (`"latent.projection"`) over the schema's defaults of that section:
        the config's values where it has the section (a validated config has every key), the schema's without a
        config. Raises KeyError for a path the schema does not have."""
        section = self.cfg
        for part in path.split("."):
            section = section.get(part, {})
        return {**schema_defaults(path), **section}

    # ---- sources -------------------------------------------------------------------------------------
    def _synthesise(self, ws: torch.Tensor, deltas: dict | None = None, noise: list | None = None) -> torch.Tensor:
        with torch.no_grad():
            return to_uint8(self.G.synthesis(ws.to(self.device), noise_mode="const",
                                             noise=None if noise is None else [n.to(self.device) for n in noise],
                                             weight_deltas={k: v.to(self.device) for k, v in (deltas or {}).items()}
                                             or None))

    def sample_source(self, seed: int, truncation_psi: float = 0.7, class_index: int | None = None) -> Source:
        """A generated image: z from `seed`, mapped with truncation ψ (class `class_index`, default the first,
        for a conditional generator). Source image and inversion are the sample itself."""
        z = torch.randn(1, self.G.z_dim, generator=torch.Generator().manual_seed(int(seed))).to(self.device)
        c = None
        if self.G.c_dim > 0:
            c = torch.zeros(1, self.G.c_dim, device=self.device)
            c[:, class_index or 0] = 1
        with torch.no_grad():
            ws = self.G.mapping(z, c, truncation_psi=truncation_psi).cpu()
        image = self._synthesise(ws)[0]
        return Source(f"sample seed {seed} (ψ {truncation_psi})", "sample", image, image, ws, seed=int(seed))

    def dataset_choices(self) -> list[str]:
        """The datasets whose images can be browsed: those with a manifest and LMDB under results/data — with a
        config, the generator's own and the inversion's (`latent.inversion.dataset`); without one, every such
        dataset (the page needs no config: encoders invert any image of the generator's resolution)."""
        folders = self.root / "results" / "data"
        if self.cfg:
            candidates = [self.cfg.get("gans", {}).get(self.gan, {}).get("dataset"),
                          self.cfg.get("latent", {}).get("inversion", {}).get("dataset")]
        else:
            candidates = sorted(p.name for p in folders.glob("*") if p.is_dir())
        names = []
        for name in candidates:
            folder = folders / str(name)
            if name and name not in names and (folder / "manifest.csv").exists() and (folder / "lmdb").exists():
                names.append(name)
        return names

    def dataset_images(self, dataset: str) -> pd.DataFrame:
        """key, label, split of a dataset's manifest, plus `stored` (True where this generator's stored
        inversion holds the key and the inversion was made from this dataset)."""
        frame = pd.read_csv(self.root / "results" / "data" / dataset / "manifest.csv", dtype=str,
                            keep_default_na=False)[["key", "label", "split"]]
        stored = self.stored_inversion(dataset)
        frame["stored"] = frame["key"].isin(list(stored.rows)) if stored is not None else False
        return frame

    def stored_inversion(self, dataset: str):
        """The `invert` output of this generator (a StoredInversion) when it was made from `dataset`'s image store
        (the store identity it records; an inversion recording none: when `dataset` is `latent.inversion.dataset`
        of the config), else None."""
        folder = self.latent_dir / "inversion"
        if not (folder / "index.csv").exists():
            return None
        if self._stored is None:
            self._stored = StoredInversion(folder)
        recorded = (self._stored.record.get("fingerprint") or {}).get("data.store")
        if recorded is not None:
            made_from = recorded == store_identity(self.root / "results" / "data" / dataset / "lmdb")
        else:
            made_from = dataset == self.cfg.get("latent", {}).get("inversion", {}).get("dataset")
        return self._stored if made_from else None

    def dataset_image(self, dataset: str, key: str) -> torch.Tensor:
        """uint8 (3, R, R): image `key` of `dataset` at the generator's resolution. Raises KeyError for a key not
        in the dataset."""
        return at_resolution(read_images(self.root / "results" / "data" / dataset / "lmdb", [key]),
                             self.resolution)[0]

    def dataset_source(self, dataset: str, key: str) -> Source:
        """A real image of `dataset` by key: its stored inversion when `invert` has run on it, otherwise
        inverted now by the encoders (`invert_image`). Raises KeyError for a key not in the dataset, NoEncoder
        when neither exists (then `project_source` on request)."""
        image = self.dataset_image(dataset, key)
        stored = self.stored_inversion(dataset)
        if stored is not None and key in stored.rows:
            ws, deltas = stored.latents([key])
            return Source(f"{dataset} {key}", "stored inversion", image, self._synthesise(ws, deltas)[0], ws, deltas)
        return self.invert_image(image, f"{dataset} {key}")

    def upload_image(self, data: bytes, name: str) -> torch.Tensor:
        """An uploaded JPEG/PNG as uint8 (3, R, R), preprocessed as at ingest. Raises UploadRejected (see
        `decode_upload`)."""
        return decode_upload(data, name, self.resolution, self.section("ingest"))

    def upload_source(self, data: bytes, name: str) -> Source:
        """An uploaded JPEG/PNG, preprocessed as at ingest and inverted by the encoders (`invert_image`).
        Raises UploadRejected (see `decode_upload`), NoEncoder."""
        return self.invert_image(self.upload_image(data, name), f"upload {Path(str(name)).name}")

    def encoders(self) -> str:
        """The inversion this generator's trained encoders give: 'e4e + HyperStyle' (results/latent/<gan>/e4e.pt
        and hyperstyle.pt) or 'e4e' (no hypernetwork, or one that cannot be used: trained on another encoder).
        Loaded once. Raises NoEncoder (saying why and how to train one) when there is no usable e4e.pt."""
        e4e, hyper = self.latent_dir / "e4e.pt", self.latent_dir / "hyperstyle.pt"
        if self._encoder is None:
            fix = (f"`snakemake {e4e.relative_to(self.root)}` trains it; until then an image is inverted by "
                   "projection, on request")
            if not e4e.exists():
                raise NoEncoder(f"no e4e encoder for {self.gan} ({e4e.relative_to(self.root)}): {fix}")
            stamp = e4e.stat().st_mtime_ns
            if self._encoder_problem[0] != stamp:  # an unusable file is read once (again when it changes)
                try:
                    self._encoder, _ = load_e4e(e4e, self.G, self.device)
                    self._encoder_problem = (stamp, "")
                except DermsynthError as exc:  # another generator's encoder, not an encoder
                    self._encoder_problem = (stamp, str(exc))
            if self._encoder is None:
                raise NoEncoder(f"{self._encoder_problem[1]}; {fix}")
            if hyper.exists():
                try:
                    self._hyper = load_hyperstyle(hyper, self.G, self.device, encoder=self._encoder)
                except DermsynthError as exc:
                    self._hyper_problem = str(exc)
        return "e4e + HyperStyle" if self._hyper is not None else "e4e"

    def invert_image(self, image: torch.Tensor, label: str) -> Source:
        """Invert a uint8 (3, R, R) image at once with the trained e4e + HyperStyle of this generator
        (results/latent/<gan>/e4e.pt, hyperstyle.pt: 0.2–0.5 s at 64² on one CPU thread), with e4e alone when there is no usable
        hypernetwork. Raises NoEncoder when there is no usable e4e encoder (see `encoders`)."""
        method = self.encoders()
        model, options = self._hyper if self._hyper is not None else (None, None)
        result = invert(self.G, self._encoder, image[None], model, options.iterations if options else 0, self.device)
        deltas = deltas_from_factors(result["factors"]) if result["factors"] else {}
        return Source(label, method, image, result["stages"][-1][0], result["ws"], deltas)

    def projection_steps(self) -> int:
        """`latent.projection.steps` of the config (the schema's default without one)."""
        return int(self.section("latent.projection")["steps"])

    def project_source(self, image: torch.Tensor, label: str, steps: int, on_step=None) -> Source:
        """Invert a uint8 (3, R, R) image by optimisation (the StyleGAN2 projector, `latent.project.project`,
        with the `latent.projection` settings but `steps` Adam steps) into W, with its noise maps. `on_step(done,
        total)` is called after every step; an exception it raises stops the projection (see review.jobs)."""
        settings = {**self.section("latent.projection"), "steps": int(steps)}
        options = ProjectionOptions.from_section(settings, where="latent.projection")
        if self._vgg is None:
            self._vgg, _ = lpips_model(net="vgg")
        result = project(self.G, image[None], self._vgg, options, [0] if self.G.c_dim else None, self.device,
                         label=f"project {label}", on_step=on_step)
        return Source(label, f"projection, {options.steps} steps", image,
                      render_ws(self.G, result["ws"], result["noise"], self.device)[0], result["ws"], {},
                      result["noise"])

    # ---- edits ---------------------------------------------------------------------------------------
    def edit_images(self, source: Source, directions: Directions, index: int, magnitudes) -> torch.Tensor:
        """uint8 (M, 3, R, R): the source latent moved by each of `magnitudes` (W distances) along direction
        `index`, with the source's kernel offsets (and projection noise)."""
        magnitudes = torch.as_tensor(np.asarray(magnitudes, dtype=np.float32)).reshape(-1)
        count = len(magnitudes)
        ws = source.ws.repeat(count, 1, 1)
        deltas = {k: v.repeat(count, 1, 1) for k, v in source.deltas.items()}
        if source.noise is None:
            return transform_images(self.G, ws, deltas, directions.vector(index), magnitudes,
                                    directions.ws_indices, self.device)
        moved = apply_direction(ws, directions.vector(index), magnitudes, directions.ws_indices)
        return self._synthesise(moved, deltas, [n.repeat(count, 1, 1, 1) for n in source.noise])

    def lpips_to(self, reference: torch.Tensor, images: torch.Tensor) -> np.ndarray:
        """LPIPS (AlexNet, Table 1's code) between one uint8 (3, R, R) reference and each of N images;
        float64 (N,)."""
        return lpips_distance(self.lpips, reference[None].expand(len(images), -1, -1, -1).to(self.device),
                              images.to(self.device))

    def render(self, source: Source, directions: Directions, index: int, magnitude: float) -> Edit:
        """One edit at `magnitude` with its LPIPS to the source image (Table 1's measure, compared with the
        threshold) and to the inversion (what the edit alone changed)."""
        start = time.perf_counter()
        image = self.edit_images(source, directions, index, [magnitude])
        to_source = float(self.lpips_to(source.image, image)[0])
        to_inversion = float(self.lpips_to(source.inversion, image)[0])
        return Edit(image[0], float(magnitude), to_source, to_inversion, to_source > self.threshold,
                    time.perf_counter() - start)

    def strip(self, sources: list[Source], directions: Directions, index: int, low: float, high: float,
              steps: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One direction on several images: a uint8 (len(sources)·R, steps·R, 3) picture, a row per source and a
        column per magnitude of linspace(low, high, steps); with the magnitudes (steps,) and the LPIPS to
        each row's source (len(sources), steps) float64."""
        magnitudes = np.linspace(low, high, steps, dtype=np.float32)
        rows, distances = [], []
        for source in sources:
            images = self.edit_images(source, directions, index, magnitudes)
            rows.append(images)
            distances.append(self.lpips_to(source.image, images))
        return tile(torch.stack(rows).numpy()), magnitudes, np.stack(distances)


def strip_seeds(source: Source, count: int = 3) -> list[int]:
    """Seeds of the `count` samples the strip shows below `source`: the smallest seeds ≥ 0 other than the source's
    own, so no row repeats the source."""
    return [s for s in range(count + 1) if s != source.seed][:count]


def to_picture(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) tensor → (H, W, 3) numpy array for display."""
    return image.permute(1, 2, 0).contiguous().numpy()

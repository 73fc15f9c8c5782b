"""Procedural dermoscopy-like images whose appearance depends on the diagnosis.

A lesion is a star-shaped region with a radial boundary function (harmonics give border
irregularity, a first harmonic and a stretch give asymmetry) filled with a blotchy mix of the
diagnosis' colours and structures (pigment network, dots, blue-white veil, arborising vessels,
milia, a dermatofibroma's central white patch, vascular lacunae, keratotic scale). Around it:
skin of a Fitzpatrick type, and acquisition artifacts (dermatoscope frame, hair, ruler, gel
bubbles) whose frequencies the caller sets per class — the bias the ISIC study found.

The body is rendered at a small working size and upscaled; hair, frame, ruler and bubbles are
drawn at full size so that they stay sharp. Everything derives from a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

WORK_SIDE = 256  # longest side of the working canvas

# Fitzpatrick skin types I–VI (linear-ish RGB in 0..1) and their share in dermoscopy archives.
SKIN_TONES = np.array([[0.96, 0.83, 0.76], [0.92, 0.76, 0.66], [0.84, 0.65, 0.52],
                       [0.70, 0.50, 0.36], [0.52, 0.35, 0.24], [0.34, 0.23, 0.17]])
SKIN_TYPE_SHARE = np.array([0.25, 0.35, 0.25, 0.10, 0.04, 0.01])

C = {  # palette (RGB 0..1)
    "light_brown": (0.66, 0.47, 0.33), "brown": (0.50, 0.33, 0.22), "dark_brown": (0.32, 0.20, 0.13),
    "black": (0.12, 0.09, 0.08), "blue_grey": (0.42, 0.47, 0.58), "reddish": (0.70, 0.35, 0.33),
    "tan": (0.76, 0.60, 0.45), "yellowish": (0.78, 0.68, 0.48), "pink": (0.85, 0.58, 0.58),
    "pearly": (0.90, 0.82, 0.80), "light_red": (0.80, 0.45, 0.42), "red": (0.70, 0.15, 0.20),
    "purple": (0.45, 0.20, 0.40), "dark_red": (0.45, 0.10, 0.15), "rash_red": (0.82, 0.42, 0.40),
}


@dataclass(frozen=True)
class Style:
    """How a diagnosis looks (per `STYLES` key): size and border ranges as fractions of the image's shorter side,
    its palette, and the probability of each dermoscopic structure (pigment network, dots, veil, …)."""
    radius: tuple[float, float]        # lesion radius as a fraction of the image's shorter side
    irregularity: float                # amplitude of high boundary harmonics
    asymmetry: float                   # first-harmonic bulge + stretch
    softness: float                    # border blur (fraction of the shorter side)
    palette: tuple[str, ...]
    colours: tuple[int, int]           # how many palette colours one lesion uses (min, max)
    network: float = 0.0               # probability of a pigment network
    dots: float = 0.0
    veil: float = 0.0
    vessels: float = 0.0
    milia: float = 0.0
    central_patch: float = 0.0
    lacunae: float = 0.0
    scale: float = 0.0


STYLES: dict[str, Style] = {
    "nv": Style((0.10, 0.22), 0.03, 0.04, 0.025, ("light_brown", "brown", "tan"), (1, 2), network=0.6, dots=0.2),
    "mel": Style((0.18, 0.34), 0.12, 0.22, 0.05, ("dark_brown", "black", "blue_grey", "reddish", "light_brown"),
                 (3, 5), network=0.5, dots=0.7, veil=0.6),
    "bkl": Style((0.14, 0.28), 0.07, 0.10, 0.012, ("tan", "light_brown", "yellowish"), (1, 3), milia=0.8, scale=0.3),
    "bcc": Style((0.12, 0.24), 0.08, 0.12, 0.04, ("pink", "pearly", "light_red"), (2, 3), vessels=0.95, dots=0.4),
    "akiec": Style((0.14, 0.30), 0.10, 0.12, 0.06, ("rash_red", "light_red", "pearly"), (2, 3), scale=0.9,
                   vessels=0.3),
    "df": Style((0.08, 0.16), 0.03, 0.05, 0.05, ("light_brown", "brown"), (1, 2), network=0.3, central_patch=0.95),
    "vasc": Style((0.08, 0.18), 0.04, 0.06, 0.015, ("red", "purple", "dark_red"), (2, 3), lacunae=0.95),
    "rash": Style((0.25, 0.45), 0.25, 0.3, 0.10, ("rash_red", "pink"), (1, 2), scale=0.5),
}


@dataclass
class Lesion:
    """What stays the same across photographs of one lesion."""

    style: str
    skin_type: int
    radius: float
    harmonics: np.ndarray          # (k, amplitude, phase) rows
    stretch: float
    angle: float
    colours: np.ndarray            # (n, 3)
    features: dict[str, bool]
    texture_seed: int


@dataclass
class View:
    """What changes from one photograph to the next (and the acquisition artifacts)."""

    width: int
    height: int
    zoom: float = 1.0
    rotation: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)
    exposure: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frame: bool = False
    hair: int = 0
    ruler: bool = False
    bubbles: int = 0
    seed: int = 0
    artifacts: dict = field(default_factory=dict)


def sample_skin_type(rng: np.random.Generator, share: np.ndarray = SKIN_TYPE_SHARE) -> int:
    """A Fitzpatrick skin type index 0–5 drawn with probabilities `share` (normalised)."""
    return int(rng.choice(6, p=share / share.sum()))


def sample_lesion(style_name: str, rng: np.random.Generator, skin_type: int) -> Lesion:
    """A random lesion of style `style_name` (a key of STYLES) on skin type `skin_type`: its outline harmonics, colours
    and features."""
    style = STYLES[style_name]
    ks = np.arange(2, 12)
    amplitudes = rng.normal(0, style.irregularity, len(ks)) / np.sqrt(ks - 1)
    harmonics = np.column_stack([ks, amplitudes, rng.uniform(0, 2 * np.pi, len(ks))])
    first = np.array([[1, rng.uniform(0.3, 1.0) * style.asymmetry, rng.uniform(0, 2 * np.pi)]])
    n_colours = int(rng.integers(style.colours[0], style.colours[1] + 1))
    chosen = rng.choice(len(style.palette), size=min(n_colours, len(style.palette)), replace=False)
    colours = np.array([C[style.palette[i]] for i in sorted(chosen)]) * rng.uniform(0.9, 1.1, (len(chosen), 1))
    features = {name: bool(rng.random() < getattr(style, name))
                for name in ("network", "dots", "veil", "vessels", "milia", "central_patch", "lacunae", "scale")}
    return Lesion(style_name, skin_type, float(rng.uniform(*style.radius)), np.vstack([first, harmonics]),
                  float(1.0 + rng.uniform(0, 1.5) * style.asymmetry), float(rng.uniform(0, np.pi)),
                  np.clip(colours, 0, 1), features, int(rng.integers(2**31)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a small random grid, bicubically upscaled."""
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _polar(lesion: Lesion, view: View, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    side = min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (x - w / 2) / side - view.offset[0]
    v = (y - h / 2) / side - view.offset[1]
    a = lesion.angle + view.rotation
    u, v = (np.cos(a) * u + np.sin(a) * v) / view.zoom, (-np.sin(a) * u + np.cos(a) * v) / view.zoom
    u = u / lesion.stretch
    return np.sqrt(u * u + v * v), np.arctan2(v, u)


def _boundary(lesion: Lesion, theta: np.ndarray) -> np.ndarray:
    radius = np.ones_like(theta)
    for k, amplitude, phase in lesion.harmonics:
        radius += amplitude * np.cos(k * theta + phase)
    return lesion.radius * np.clip(radius, 0.35, None)


def render_body(lesion: Lesion, view: View) -> np.ndarray:
    """Skin + lesion at working size, float RGB in [0, 1]."""
    scale = WORK_SIDE / max(view.width, view.height)
    shape = (max(8, round(view.height * scale)), max(8, round(view.width * scale)))
    rng = np.random.default_rng(lesion.texture_seed)
    view_rng = np.random.default_rng(view.seed)
    style = STYLES[lesion.style]

    skin = SKIN_TONES[lesion.skin_type] * (1 + 0.03 * _smooth_noise(view_rng, shape, 6)[..., None])
    skin = skin * np.array([1.0, 0.97, 0.97]) + 0.02 * _smooth_noise(view_rng, shape, 3)[..., None] * np.array([1, 0, 0])

    distance, theta = _polar(lesion, view, shape)
    edge = _boundary(lesion, theta)
    inside = np.clip((edge - distance) / style.softness + 0.5, 0, 1)
    inside = inside * inside * (3 - 2 * inside)  # smoothstep
    rel = np.clip(distance / np.maximum(edge, 1e-6), 0, 1.5)

    weights = np.stack([_smooth_noise(rng, shape, 5) * 2.0 for _ in lesion.colours], axis=-1)
    if lesion.style in ("nv", "df"):
        weights[..., 0] += 1.5 * (rel - 0.5)  # lighter rim, darker centre for the first colours
    weights = np.exp(weights - weights.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    darken = 0.25 + 0.75 * SKIN_TONES[lesion.skin_type].mean()  # lesions stay darker than skin
    colour = (weights[..., None] * lesion.colours[None, None] * darken).sum(axis=-2)

    colour = _structures(lesion, colour, rel, distance, theta, shape, rng, edge)
    image = skin * (1 - inside[..., None]) + colour * inside[..., None]
    falloff = 1 - 0.18 * np.clip((distance * lesion.stretch) ** 2, 0, 1)
    image = image * falloff[..., None] * view.exposure * np.array(view.cast)
    return np.clip(image, 0, 1).astype(np.float32)


def _structures(lesion, colour, rel, distance, theta, shape, rng, edge) -> np.ndarray:
    f = lesion.features
    h, w = shape
    side = min(h, w)
    if f["network"]:
        wobble = 0.4 if lesion.style == "mel" else 0.12
        freq = side / 7.0
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        warp = wobble * _smooth_noise(rng, shape, 8) * np.pi
        lines = np.minimum(np.abs(np.sin(x / freq * np.pi + warp)), np.abs(np.sin(y / freq * np.pi - warp)))
        strength = 0.35 * (lines < 0.25) * (rel < 0.95)
        colour = colour * (1 - strength[..., None] * 0.6)
    if f["veil"]:
        patch = (_smooth_noise(rng, shape, 4) > 0.3) * (rel < 0.85)
        colour = colour * (1 - 0.6 * patch[..., None]) + 0.6 * patch[..., None] * np.array(C["blue_grey"]) * 1.3
    if f["central_patch"]:
        centre = np.clip(1 - rel / 0.45, 0, 1) ** 0.7
        colour = colour * (1 - 0.8 * centre[..., None]) + 0.8 * centre[..., None] * np.array([0.92, 0.86, 0.82])
    if f["scale"]:
        grain = rng.random(shape) > 0.82
        colour = np.where((grain * (rel < 1.0))[..., None], colour * 0.4 + 0.6 * np.array([0.93, 0.90, 0.86]), colour)
    canvas = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), np.float32)
    cy, cx = np.unravel_index(np.argmin(distance), distance.shape)
    radius_px = float(np.median(edge)) * side
    if f["dots"]:
        for _ in range(int(rng.integers(6, 25))):
            r, a = radius_px * np.sqrt(rng.random()) * 0.9, rng.uniform(0, 2 * np.pi)
            centre = (int(cx + r * np.cos(a)), int(cy + r * np.sin(a)))
            cv2.circle(mask, centre, max(1, int(rng.integers(1, 3))), 1.0, -1)
            cv2.circle(canvas, centre, max(1, int(rng.integers(1, 3))), C["black"], -1)
    if f["milia"]:
        for _ in range(int(rng.integers(4, 14))):
            r, a = radius_px * np.sqrt(rng.random()) * 0.85, rng.uniform(0, 2 * np.pi)
            centre = (int(cx + r * np.cos(a)), int(cy + r * np.sin(a)))
            cv2.circle(mask, centre, 1, 0.9, -1)
            cv2.circle(canvas, centre, 1, (0.97, 0.95, 0.88), -1)
    if f["lacunae"]:
        for _ in range(int(rng.integers(6, 16))):
            r, a = radius_px * np.sqrt(rng.random()) * 0.8, rng.uniform(0, 2 * np.pi)
            centre = (int(cx + r * np.cos(a)), int(cy + r * np.sin(a)))
            shade = C["dark_red"] if rng.random() < 0.5 else C["purple"]
            size = max(1, int(radius_px * rng.uniform(0.08, 0.2)))
            cv2.circle(mask, centre, size, 0.85, -1)
            cv2.circle(canvas, centre, size, shade, -1)
    if f["vessels"]:
        for _ in range(int(rng.integers(2, 5))):
            _branch(canvas, mask, rng, (cx, cy), radius_px, depth=3)
    blend = cv2.GaussianBlur(mask, (3, 3), 0)[..., None]
    return colour * (1 - blend) + canvas * blend


def _branch(canvas, mask, rng, start, radius_px, depth) -> None:
    """Arborising vessels: a random walk that forks."""
    x, y = start[0] + rng.normal(0, radius_px * 0.3), start[1] + rng.normal(0, radius_px * 0.3)
    heading = rng.uniform(0, 2 * np.pi)
    points = [(int(x), int(y))]
    for _ in range(int(rng.integers(4, 9))):
        heading += rng.normal(0, 0.5)
        step = radius_px * rng.uniform(0.06, 0.14)
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((int(x), int(y)))
    poly = np.array(points, np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [poly], False, C["red"], 1)
    cv2.polylines(mask, [poly], False, 0.9, 1)
    if depth > 1:
        _branch(canvas, mask, rng, points[len(points) // 2], radius_px * 0.7, depth - 1)


def render(lesion: Lesion, view: View) -> np.ndarray:
    """The full-size photograph as uint8 RGB (height, width, 3)."""
    body = render_body(lesion, view)
    image = cv2.resize(body, (view.width, view.height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(view.seed + 1)
    grain = np.empty_like(image)
    cv2.setRNGSeed(view.seed)
    cv2.randn(grain, 0.0, 0.012)
    image += grain
    for _ in range(view.hair):
        _hair(image, rng)
    for _ in range(view.bubbles):
        _bubble(image, rng)
    if view.ruler:
        _ruler(image, rng)
    if view.frame:
        view.artifacts["frame"] = _frame(image, rng)
    np.clip(image, 0, 1, out=image)
    return cv2.convertScaleAbs(image, alpha=255.0)


def _hair(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape[:2]
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    heading, points = rng.uniform(0, 2 * np.pi), []
    for _ in range(40):
        heading += rng.normal(0, 0.08)
        x, y = x + np.cos(heading) * max(h, w) / 40, y + np.sin(heading) * max(h, w) / 40
        points.append((int(x), int(y)))
    shade = tuple(float(v) for v in rng.uniform(0.05, 0.25) * np.array([1.0, 0.85, 0.7]))
    thickness = max(1, int(round(min(h, w) / 300 * rng.uniform(0.6, 1.6))))
    cv2.polylines(image, [np.array(points, np.int32).reshape(-1, 1, 2)], False, shade, thickness, cv2.LINE_AA)


def _bubble(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape[:2]
    centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
    radius = int(min(h, w) * rng.uniform(0.01, 0.05))
    cv2.circle(image, centre, radius, (0.95, 0.95, 0.95), max(1, radius // 8), cv2.LINE_AA)
    cv2.circle(image, (centre[0] - radius // 3, centre[1] - radius // 3), max(1, radius // 4),
               (1.0, 1.0, 1.0), -1, cv2.LINE_AA)


def _ruler(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape[:2]
    band = max(4, int(min(h, w) * 0.05))
    top = int(rng.choice([0, h - band]))
    image[top:top + band] = image[top:top + band] * 0.3 + 0.7 * np.array([0.95, 0.95, 0.9])
    step = max(3, w // 40)
    for i, x in enumerate(range(0, w, step)):
        length = band if i % 10 == 0 else band // 2
        y0 = top if top == 0 else top + band - length
        cv2.line(image, (x, y0), (x, y0 + length - 1), (0.1, 0.1, 0.1), 1)


def _frame(image: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """The dermatoscope's black circular frame: every pixel (column x, row y) at distance ≥ `radius` from
    (`x`, `y`) becomes 0.02 grey, with a linear fade over 2 % of the shorter side inside that circle.
    Returns that geometry in pixels of `image` ({"radius", "x", "y"}; demo_truth.csv records it)."""
    h, w = image.shape[:2]
    radius = min(h, w) * rng.uniform(0.48, 0.62) + abs(h - w) * rng.uniform(0.0, 0.3)
    shift_x, shift_y = rng.normal(0, w * 0.02), rng.normal(0, h * 0.02)
    dx = np.arange(w, dtype=np.float32) - w / 2 - shift_x
    dy = np.arange(h, dtype=np.float32) - h / 2 - shift_y
    distance = cv2.magnitude(np.broadcast_to(dx, (h, w)).copy(), np.broadcast_to(dy[:, None], (h, w)).copy())
    fade = np.clip((radius - distance) / (min(h, w) * 0.02), 0, 1)[..., None]
    image *= fade
    image += (1 - fade) * 0.02
    return {"radius": float(radius), "x": float(w / 2 + shift_x), "y": float(h / 2 + shift_y)}

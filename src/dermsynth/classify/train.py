"""Training a timm classifier with a study's recipe: early stopping on a validation metric, the best
epoch kept, resumable after a kill, deterministic given the seed.

Every epoch draws its order (and, through the DataLoader's seeded generator, its augmentations) from
seed × 1000 + epoch, so a run resumed from its end-of-epoch checkpoint continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ..errors import InputError
from ..metrics.classification import classification_report
from ..progress import Progress
from .data import ImageRows, balanced_sample_weights
from .models import create_classifier


@dataclass
class Recipe:
    """A classifier training recipe (the studies' defaults: HAM10000 DenseNet). `input_resolution` in pixels;
    `lr` Adam learning rate; `monitor` the validation metric early stopping maximises."""
    input_resolution: int = 224
    batch: int = 32
    epochs: int = 100
    patience: int = 25
    lr: float = 1e-5
    weight_decay: float = 1e-4
    dropout: float = 0.1
    oversample: bool = True
    augment: list = field(default_factory=lambda: ["hflip", "vflip", "cutout"])
    monitor: str = "balanced_accuracy"     # balanced_accuracy | auc | accuracy
    workers: int = 0
    pretrained: bool = True
    seed: int = 0


def recipe_from(settings: dict) -> Recipe:
    """A Recipe from a config's `recipe` section (unknown keys ignored)."""
    return Recipe(**{k: v for k, v in settings.items() if k in Recipe.__dataclass_fields__})


def build_model(architecture: str, classes: int, recipe: Recipe, pretrained: bool | None = None):
    """(model, weights label): `architecture` (a timm name or one registered in `classify.models`) with a new
    `classes`-way head and the recipe's dropout; ImageNet weights from the weights cache when present and
    wanted (`pretrained`, default the recipe's). Raises ConfigError for an unknown architecture."""
    use_weights = recipe.pretrained if pretrained is None else pretrained
    return create_classifier(architecture, classes, pretrained=use_weights, drop_rate=recipe.dropout)


def monitored_value(report: dict, monitor: str) -> float:
    """The value of `monitor` in a classification report (binary AUC for two classes, else the mean
    one-vs-rest AUC); NaN when undefined."""
    if monitor == "auc":
        return report["binary_auc"] if "binary_auc" in report else report["mean_auc"]
    return report[monitor]


def check_monitor_defined(y_val, classes: list[str], monitor: str, where: str = "the validation split") -> list[str]:
    """Stop before training when the early-stopping metric cannot be computed on the validation set.

    AUC (binary or one-vs-rest mean) needs images of at least two classes; every metric needs at
    least one image. A class missing from validation leaves balanced accuracy defined over the
    classes present, which is returned as a warning.

    Raises:
        InputError: the validation set is empty, or `monitor` is `auc` and it holds one class only.
    """
    present = sorted({classes[int(i)] for i in np.asarray(y_val, dtype=int)})
    advice = ("Re-split the dataset so that validation holds every class (split.require_all_classes reports it; "
              "more patients/lesions of the class help), or choose another early-stopping metric in the recipe "
              "(`monitor`: balanced_accuracy or accuracy).")
    if not present:
        raise InputError(f"{where} is empty: early stopping on validation {monitor} is impossible. Give "
                         "datasets.<name>.split.fractions a validation share, or force a source into validation.")
    if monitor == "auc" and len(present) < 2:
        raise InputError(f"{where} holds only class '{present[0]}' ({len(y_val)} images): validation AUC, the "
                         f"early-stopping metric (recipe.monitor: auc), is undefined with one class, so no epoch "
                         f"could be chosen as best. {advice}")
    missing = [c for c in classes if c not in present]
    return [f"{where} has no image of class(es) {', '.join(missing)}: validation {monitor} ignores them"] if missing else []


def _loader(dataset: ImageRows, recipe: Recipe, epoch: int | None, device: torch.device) -> DataLoader:
    generator = torch.Generator().manual_seed(recipe.seed * 1000 + (epoch or 0))
    if epoch is None:
        sampler = None
    elif recipe.oversample:
        sampler = WeightedRandomSampler(balanced_sample_weights(dataset.rows["label"]), len(dataset),
                                        replacement=True, generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    # training drops a last partial batch: a batch of one breaks BatchNorm
    return DataLoader(dataset, batch_size=recipe.batch, sampler=sampler, num_workers=recipe.workers,
                      generator=generator, pin_memory=device.type == "cuda", drop_last=epoch is not None
                      and len(dataset) > recipe.batch)


@torch.no_grad()
def predict_probabilities(model, dataset: ImageRows, recipe: Recipe, device: torch.device,
                          label: str | None = None) -> np.ndarray:
    """Softmax probabilities, float (N, classes) in [0, 1], of every image of `dataset` in order."""
    model.eval()
    out = []
    progress = Progress(len(dataset), label) if label else None
    for images, _ in _loader(dataset, recipe, None, device):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(images)
        out.append(logits.float().softmax(dim=1).cpu())
        if progress:
            progress.update(len(images))
    if progress:
        progress.close()
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train_step(model, optimizer, scaler, images: torch.Tensor, targets: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """One optimisation step on a batch: images float (N, 3, R, R) normalised as the loader gives them,
    targets int64 (N,) class indices. On CUDA: channels_last activations and float16 autocast with the
    gradient scaler (mixed precision, Micikevicius et al. 2018); on CPU plain float32. Returns the
    detached cross-entropy loss (a 0-d tensor on `device`)."""
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        loss = F.cross_entropy(model(images), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _resume(resume: Path, model, optimizer, architecture: str) -> dict:
    """The training state saved in `resume` (resume.pt) with its model and optimizer state loaded, or a fresh
    state when there is none."""
    if not resume.exists():
        return {"epoch": 0, "best": -math.inf, "best_epoch": -1, "since_best": 0, "history": []}
    saved = torch.load(resume, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = json.loads(saved["state"])
    print(f"resuming {architecture} after epoch {state['epoch']}", flush=True)
    return state


def train_classifier(architecture: str, classes: list[str], train_set: ImageRows, validation_set: ImageRows,
                     recipe: Recipe, out_dir: str | Path, device: str | torch.device = "cpu",
                     stop_after_epochs: int | None = None) -> dict:
    """Train with early stopping; writes best.pt (the best validation epoch) and resume.pt (every
    epoch) in out_dir. `stop_after_epochs` ends the call early (as a kill would), for tests.
    Returns the history and the best epoch."""
    for warning in check_monitor_defined(validation_set.targets, classes, recipe.monitor):
        print(f"warning: {warning}", flush=True)
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    model, weights = build_model(architecture, len(classes), recipe)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    resume = out_dir / "resume.pt"
    state = _resume(resume, model, optimizer, architecture)
    y_val = validation_set.targets
    epochs_run = 0
    while state["epoch"] < recipe.epochs and state["since_best"] < recipe.patience:
        epoch = state["epoch"]
        torch.manual_seed(recipe.seed * 1000 + epoch)  # augmentations drawn in this process (workers=0)
        model.train()
        losses = []
        for images, targets in _loader(train_set, recipe, epoch, device):
            losses.append(float(train_step(model, optimizer, scaler, images, targets, device)))
        report = classification_report(y_val, predict_probabilities(model, validation_set, recipe, device), classes)
        value = monitored_value(report, recipe.monitor)
        if not math.isfinite(value):
            raise InputError(f"validation {recipe.monitor} is undefined ({value}) after epoch {epoch + 1}; "
                             "early stopping cannot choose a best epoch. Check the validation split's classes.")
        improved = value > state["best"]
        if improved:
            state.update(best=value, best_epoch=epoch, since_best=0)
            _save(out_dir / "best.pt", {"model": model.state_dict(), "epoch": epoch,
                                        "architecture": architecture, "classes": list(classes),
                                        "recipe": json.dumps(asdict(recipe)), "weights": weights})
        else:
            state["since_best"] += 1
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                                 "validation_" + recipe.monitor: value,
                                 "validation_balanced_accuracy": report["balanced_accuracy"], "best": improved})
        state["epoch"] = epoch + 1
        _save(resume, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": json.dumps(state)})
        print(f"{architecture} epoch {epoch + 1}/{recipe.epochs}: loss {state['history'][-1]['train_loss']:.4f}, "
              f"validation {recipe.monitor} {value:.4f}{' (best)' if improved else ''}", flush=True)
        epochs_run += 1
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
    stopped_early = state["since_best"] >= recipe.patience
    return {**state, "stopped_early": stopped_early, "weights": weights}


def load_best(out_dir: str | Path, device="cpu"):
    """(model in eval mode on `device`, the saved best.pt dict) of a trained classifier folder.

    Raises:
        FileNotFoundError: the folder has no best.pt (training has not run)."""
    saved = torch.load(Path(out_dir) / "best.pt", map_location="cpu", weights_only=True)
    recipe = Recipe(**json.loads(saved["recipe"]))
    model, _ = build_model(saved["architecture"], len(saved["classes"]), recipe, pretrained=False)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), saved

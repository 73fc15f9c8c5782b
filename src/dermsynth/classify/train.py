"""Training a timm classifier with a study's recipe: early stopping on a validation metric, the best
epoch kept, resumable after a kill, deterministic given the seed.

Every epoch draws its order (and, through the DataLoader's seeded generator, its augmentations) from
seed × 1000 + epoch, so a run resumed from its end-of-epoch checkpoint continues exactly as an
uninterrupted one would. The random state is the run's own: training runs inside `torch.random.fork_rng`,
so the caller's global random state is as it was afterwards.

State belongs to its run. resume.pt and best.pt record the run's *fingerprint* (`run_fingerprint`): the
data (the stores' identities, digests of the training and validation rows, the classes, the input
resolution), the architecture and the recipe. A resume.pt or best.pt whose fingerprint differs from the
current run's — the recipe was edited after a kill (a lower `lr`, a smaller `batch`), the data or the
classes changed — is never resumed nor picked as "best": the run's files are moved to
`superseded-<time>/` (one line says so and what differs) and training starts afresh. Only the fields of
`SCHEDULE_ONLY` may change across a resume: `epochs` and `patience` (when to stop: a run resumed with more
epochs continues as if it had been started with them) and `workers` (how batches are loaded). Everything
else — lr, batch, weight decay, dropout, oversampling, augmentations, monitor, pretrained, seed, input
resolution — may not. Each start is recorded in the state's `runs` (from which epoch, with which schedule).

One writer per model folder: `train_classifier` holds the folder's lock (`locks.exclusive`) and proves
the folder writable before the first epoch; every file is written atomically (`outputs.save_torch`).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ..checkpoints import WrongFileError, load_checkpoint
from ..errors import InputError
from ..fingerprint import differences, digest, set_aside, store_identity
from ..locks import exclusive
from ..metrics.classification import classification_report
from ..options import Settings
from ..outputs import check_writable, save_torch
from ..progress import Progress
from .data import ImageRows, balanced_sample_weights
from .models import create_classifier


@dataclass
class Recipe(Settings):
    """A classifier training recipe, mirroring a study's `classifiers.<study>.recipe` (build it with
    `Recipe.from_section`; the schema holds both studies' defaults and descriptions): `input_resolution` — images
    are resized to this side, px; `batch`; at most `epochs` epochs, early stopping after `patience` epochs without a
    better `monitor` (balanced_accuracy | auc | accuracy, on the validation split); Adam `lr` and `weight_decay`;
    `dropout` before the head; `oversample` — classes equally likely per batch; `augment` — hflip, vflip, rotate,
    cutout; `workers` — DataLoader processes; `pretrained` — ImageNet weights from the weights cache; `seed`."""

    schema_section = ("classifiers.ham10000.recipe", "classifiers.isic.recipe")

    input_resolution: int
    batch: int
    epochs: int
    patience: int
    lr: float
    weight_decay: float
    dropout: float
    oversample: bool
    augment: list
    monitor: str
    workers: int
    pretrained: bool
    seed: int


SCHEDULE_ONLY = ("epochs", "patience", "workers")
"""Recipe fields that may differ between a resume.pt and the run resuming it (see the module docstring)."""

RUN_FILES = ("resume.pt", "best.pt", "metrics.json", "predictions-test.csv", "predictions-validation.csv",
             "predictions-synthetic.csv", "confusion.png")
"""A model folder's files that belong to one run: set aside together when another run takes the folder."""

RESUME_FORMAT = "classifier-resume"
BEST_FORMAT = "classifier"


def recipe_from(settings: dict) -> Recipe:
    """The Recipe of a validated `classifiers.<study>.recipe` section (`Recipe.from_section`). Raises ConfigError
    naming the keys it lacks."""
    return Recipe.from_section(settings, where="train-classifier options' recipe")


def build_model(architecture: str, classes: int, recipe: Recipe, pretrained: bool | None = None):
    """(model, weights label): `architecture` (a timm name or one registered in `classify.models`) with a new
    `classes`-way head and the recipe's dropout; ImageNet weights from the weights cache when present and
    wanted (`pretrained`, default the recipe's); the random weights drawn from the recipe's seed (the global
    random state is left alone). Raises ConfigError for an unknown architecture."""
    use_weights = recipe.pretrained if pretrained is None else pretrained
    return create_classifier(architecture, classes, pretrained=use_weights, seed=recipe.seed, drop_rate=recipe.dropout)


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


def _rows_digest(dataset: ImageRows) -> str:
    rows = dataset.rows
    stores = rows["store"] if "store" in rows else [""] * len(rows)
    return digest(sorted(zip(map(str, stores), map(str, rows["key"]), map(str, rows["label"]))))


def run_fingerprint(architecture: str, classes: list[str], train_set: ImageRows, validation_set: ImageRows,
                    recipe: Recipe) -> dict:
    """The fingerprint a classifier run records in resume.pt, best.pt and metrics.json: data (the identity of
    every store read, digests of the training and validation rows — store, key, label —, the classes, the input
    resolution), the architecture and the recipe without its `SCHEDULE_ONLY` fields."""
    stores = {**validation_set.stores, **train_set.stores}
    return {"data.stores": {name: store_identity(store.root) for name, store in sorted(stores.items())},
            "data.train": _rows_digest(train_set), "data.validation": _rows_digest(validation_set),
            "data.classes": list(classes), "data.resolution": recipe.input_resolution,
            "architecture": architecture,
            "recipe": {k: v for k, v in asdict(recipe).items() if k not in SCHEDULE_ONLY}}


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


def _fresh_state() -> dict:
    return {"epoch": 0, "best": -math.inf, "best_epoch": -1, "since_best": 0, "history": [], "runs": []}


def _recorded(path: Path, kinds: tuple[str, ...], what: str) -> tuple[dict | None, str | None]:
    """(the checkpoint at `path`, None), or (None, why it cannot be reused) for a file that is not one."""
    try:
        return load_checkpoint(path, kinds, what, "it is set aside"), None
    except WrongFileError as exc:
        return None, str(exc).split(";")[0]


def _state_of_run(out_dir: Path, fingerprint: dict) -> tuple[dict | None, str | None]:
    """(resume.pt's checkpoint, None) when it belongs to the run of `fingerprint`, (None, None) when there is
    nothing to resume, else (None, the reason the folder's files are another run's)."""
    resume, best = out_dir / "resume.pt", out_dir / "best.pt"
    if resume.exists():
        saved, problem = _recorded(resume, (RESUME_FORMAT,), "a classifier's resume checkpoint (resume.pt)")
        if problem:
            return None, problem
        found = differences(saved.get("fingerprint"), fingerprint)
        if found:
            return None, f"{resume} was written by another run ({'; '.join(found)})"
        found = _best_differs(best, fingerprint)
        return (None, f"{best} is not this run's best epoch ({'; '.join(found)})") if found else (saved, None)
    found = _best_differs(best, fingerprint)
    return (None, f"{best} was written by another run ({'; '.join(found)})") if found else (None, None)


def _best_differs(best: Path, fingerprint: dict) -> list[str]:
    """Why an existing best.pt is not this run's (unreadable, or its fingerprint differs); [] when it is, or absent."""
    if not best.exists():
        return []
    kept, problem = _recorded(best, (BEST_FORMAT,), "a classifier checkpoint (best.pt)")
    return [problem] if problem else differences(kept.get("fingerprint"), fingerprint)


def _resume(out_dir: Path, model, optimizer, architecture: str, fingerprint: dict) -> dict:
    """The training state of resume.pt in `out_dir` with its model and optimizer state loaded when it belongs
    to the run of `fingerprint`; else a fresh state, after setting the folder's run files (`RUN_FILES`) of
    another run aside into superseded-<time>/ with one line saying what differs."""
    saved, problem = _state_of_run(out_dir, fingerprint)
    if problem:
        set_aside(out_dir, RUN_FILES, problem, "train-classifier")
    if saved is None:
        return _fresh_state()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = {**_fresh_state(), **json.loads(saved["state"])}
    print(f"resuming {architecture} after epoch {state['epoch']} (same data, architecture and recipe)", flush=True)
    return state


def train_classifier(architecture: str, classes: list[str], train_set: ImageRows, validation_set: ImageRows,
                     recipe: Recipe, out_dir: str | Path, device: str | torch.device = "cpu",
                     stop_after_epochs: int | None = None, locked: bool = False) -> dict:
    """Train with early stopping; writes best.pt (the best validation epoch) and resume.pt (every epoch) in
    out_dir, both with the run's fingerprint (`run_fingerprint`); resumes resume.pt only when it belongs to this
    run (else sets the folder's run files aside and starts afresh, see the module docstring).
    `stop_after_epochs` ends the call early (as a kill would), for tests. `locked`: the caller holds out_dir's
    lock already (else it is taken here). Returns the history, the best epoch, the fingerprint and the runs.

    Raises:
        BusyError: another process is writing to out_dir. OutputError: out_dir cannot be written.
        InputError: the early-stopping metric is undefined on the validation set."""
    for warning in check_monitor_defined(validation_set.targets, classes, recipe.monitor):
        print(f"warning: {warning}", flush=True)
    out_dir = check_writable(out_dir)
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with contextlib.ExitStack() as stack:
        if not locked:
            stack.enter_context(exclusive(out_dir, "train-classifier"))
        stack.enter_context(torch.random.fork_rng(devices=devices))
        return _train(architecture, classes, train_set, validation_set, recipe, out_dir, device, stop_after_epochs)


def _train(architecture, classes, train_set, validation_set, recipe, out_dir: Path, device, stop_after_epochs):
    fingerprint = run_fingerprint(architecture, classes, train_set, validation_set, recipe)
    model, weights = build_model(architecture, len(classes), recipe)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    resume = out_dir / "resume.pt"
    state = _resume(out_dir, model, optimizer, architecture, fingerprint)
    state["runs"].append({"from_epoch": state["epoch"], **{k: getattr(recipe, k) for k in SCHEDULE_ONLY}})
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
            save_torch(out_dir / "best.pt", {"format": BEST_FORMAT, "model": model.state_dict(), "epoch": epoch,
                                             "architecture": architecture, "classes": list(classes),
                                             "recipe": json.dumps(asdict(recipe)), "weights": weights,
                                             "fingerprint": fingerprint})
        else:
            state["since_best"] += 1
        state["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                                 "validation_" + recipe.monitor: value,
                                 "validation_balanced_accuracy": report["balanced_accuracy"], "best": improved})
        state["epoch"] = epoch + 1
        save_torch(resume, {"format": RESUME_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "state": json.dumps(state), "fingerprint": fingerprint})
        print(f"{architecture} epoch {epoch + 1}/{recipe.epochs}: loss {state['history'][-1]['train_loss']:.4f}, "
              f"validation {recipe.monitor} {value:.4f}{' (best)' if improved else ''}", flush=True)
        epochs_run += 1
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
    stopped_early = state["since_best"] >= recipe.patience
    return {**state, "stopped_early": stopped_early, "weights": weights, "fingerprint": fingerprint}


def load_best(out_dir: str | Path, device="cpu"):
    """(model in eval mode on `device`, the saved best.pt dict) of a trained classifier folder (or of its
    best.pt given directly).

    Raises:
        WrongFileError: the folder has no best.pt (not a trained classifier folder), or best.pt is not a
        classifier checkpoint (a generator, a resume.pt, a truncated file)."""
    path = Path(out_dir)
    fix = ("give the model folder that train-classifier wrote (results/classifiers/<study>/<scenario>/"
           "<architecture>, holding best.pt)")
    if path.is_dir():
        if not (path / "best.pt").exists():
            raise WrongFileError(f"{path} holds no best.pt: it is not a trained classifier folder; {fix}")
        path = path / "best.pt"
    saved = load_checkpoint(path, (BEST_FORMAT,), "a classifier checkpoint (best.pt)", fix)
    recipe = Recipe.from_section(json.loads(saved["recipe"]), where=f"{path}'s recipe")
    model, _ = build_model(saved["architecture"], len(saved["classes"]), recipe, pretrained=False)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), saved

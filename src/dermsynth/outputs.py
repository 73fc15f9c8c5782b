"""Atomic output writers: a killed job never leaves half a file under a final name.

Every writer goes through `atomic_path(path)`: it yields a temporary name beside `path` that is unique to
this process and call (`.<name>.<pid>.<random>.tmp`), so two processes writing the same output never share
a temporary file, and renames it over `path` only when the writer returned. A writer that fails (a kill, a
full disk) leaves at most its own temporary file, which the next `atomic_path` on the same folder does not
reuse. Errors of the operating system while writing (disk full, quota, read-only file system, permission)
become one `OutputError` naming the file and the fix (`disk_error`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from .errors import DermsynthError


class OutputError(DermsynthError):
    """An output could not be written: the file, what the operating system said, and what to do."""


_FIXES = {
    errno.ENOSPC: "free space on that file system (or point the output elsewhere), then run the same command "
                  "again: finished work is kept and it resumes",
    errno.EDQUOT: "your disk quota is used up: free space or ask for more, then run the same command again",
    errno.EROFS: "that file system is read-only: write the outputs to a writable folder",
    errno.EACCES: "you may not write there: fix the folder's permissions or write the outputs elsewhere",
    errno.EPERM: "you may not write there: fix the folder's permissions or write the outputs elsewhere",
    errno.EIO: "the device reported an input/output error (often a full or failing disk): check it, then run "
               "the same command again",
    errno.EFBIG: "the file is larger than this system allows (ulimit -f or the file system's limit)",
}


def disk_error(path: str | Path, exc: BaseException) -> OutputError | None:
    """The one-line `OutputError` for an OS failure `exc` while writing `path`, or None when `exc` is not one
    (errno ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EIO, EFBIG; also PyTorch's and LMDB's wrappers of them)."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code is None:  # torch.save on a full disk: "[enforce fail at inline_container.cc] . unexpected pos"
        if "unexpected pos" in text or "PytorchStreamWriter failed" in text or "file write failed" in text:
            code = errno.ENOSPC
        elif "Input/output error" in text:
            code = errno.EIO
        elif "No space left" in text or "Disk quota exceeded" in text:
            code = errno.ENOSPC if "No space left" in text else errno.EDQUOT
        elif "Read-only file system" in text:
            code = errno.EROFS
    if code not in _FIXES:
        return None
    said = os.strerror(code) if code else text
    if code == errno.ENOSPC and "unexpected pos" in text:
        said = "the write stopped short (a full disk)"
    return OutputError(f"cannot write {path}: {said}; {_FIXES[code]}")


def temporary_name(path: str | Path) -> Path:
    """A temporary path beside `path`, unique to this process and call (never a fixed `.tmp` name)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path for `path`'s content; on success rename it over `path` (atomic on one
    file system), on failure remove it. The parent folder is created. OS write failures are raised as
    `OutputError` naming `path` (see `disk_error`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_error(path.parent, exc) or exc) from None
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        wrapped = disk_error(path, exc) if isinstance(exc, Exception) else None
        if wrapped is not None:
            raise wrapped from None
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """`payload` as indented JSON at `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """`text` at `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """`frame` as CSV (no index) at `path`, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_torch(path: str | Path, payload: Any) -> None:
    """`torch.save(payload)` at `path`, atomically; a full disk is one line naming `path`, not PyTorch's
    'enforce fail … unexpected pos'."""
    # deferred: torch — options, locks and the command line import this module and must stay light
    import torch
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_npz(path: str | Path, **arrays) -> None:
    """`np.savez(**arrays)` at `path` (which should end in .npz), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def tile(images) -> np.ndarray:
    """uint8 images (rows, columns, 3, H, W) → one picture (rows·H, columns·W, 3), no labels: for pictures that are
    data (the review app's strips); a picture a person reads is a labelled `figures.image_grid`."""
    rows, columns, channels, height, width = images.shape
    return np.asarray(images).transpose(0, 3, 1, 4, 2).reshape(rows * height, columns * width, channels)


def write_png(path: str | Path, picture: np.ndarray) -> None:
    """uint8 (H, W, 3) `picture` as PNG at `path`, atomically. Only for images that are data (generated samples,
    images of a set); a picture a person reads is a labelled figure saved with `save_figure`."""
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


FIGURE_LABELS_KEY = "dermsynth:labels"  # the PNG tEXt keyword of `save_figure`'s labels (figures.LABELS_KEY)


def _texts(items) -> list[str]:
    return [text for text in (item.get_text() for item in items) if text]


def figure_texts(figure) -> dict:
    """Every text a matplotlib `figure` shows, as plain data: {"title": the figure's suptitle, else its axes' titles
    joined with " | ", "axes": [{"title", "xlabel", "ylabel", "xticklabels", "yticklabels", "legend"} per axes
    (colour bars included: their label is the ylabel or xlabel)], "legend": the figure-level legends' entries,
    "texts": the free texts (fig.text, ax.text)}.
    Tick labels are read after laying the figure out without rendering, so automatic ticks are included."""
    figure.draw_without_rendering()
    panels = []
    for axes in figure.axes:
        legend = axes.get_legend()
        title = " ".join(t for t in (axes.get_title("left"), axes.get_title(), axes.get_title("right")) if t)
        label_getter = getattr(axes, "get_zlabel", None)
        panels.append({"title": title, "xlabel": axes.get_xlabel(), "ylabel": axes.get_ylabel(),
                       **({"zlabel": label_getter()} if label_getter else {}),
                       "xticklabels": _texts(axes.get_xticklabels()), "yticklabels": _texts(axes.get_yticklabels()),
                       "legend": _texts(legend.get_texts()) if legend is not None else []})
    heading = getattr(figure, "_suptitle", None)
    title = (heading.get_text() if heading is not None else "") or " | ".join(p["title"] for p in panels if p["title"])
    free = _texts(t for t in figure.texts if t is not heading) + [t for axes in figure.axes for t in _texts(axes.texts)]
    legend = [text for item in figure.legends for text in _texts(item.get_texts())]
    return {"title": title, "axes": panels, "legend": legend, "texts": free}


def save_figure(path: str | Path, figure, **savefig_kwargs) -> None:
    """A matplotlib `figure` at `path` (format from its suffix), atomically, cropped to what it draws
    (bbox_inches="tight", which moves the canvas without resampling: a `figures.image_grid` keeps one image pixel
    per PNG pixel). A PNG also stores every text the figure shows (`figure_texts`: title, axis and tick
    labels, legends, free texts) as JSON in its tEXt chunk "dermsynth:labels" (`read_figure_labels`).
    Raises OutputError when the file cannot be written."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    savefig_kwargs.setdefault("bbox_inches", "tight")
    savefig_kwargs.setdefault("pad_inches", 0.08)
    if fmt == "png":
        labels = json.dumps(figure_texts(figure), ensure_ascii=True)  # tEXt is Latin-1: escape the rest
        savefig_kwargs["metadata"] = {**savefig_kwargs.get("metadata", {}), FIGURE_LABELS_KEY: labels}
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, **savefig_kwargs)


def read_figure_labels(path: str | Path) -> dict | None:
    """The texts a figure written by `save_figure` shows ({"title", "axes": [...], "texts": [...]}, see
    `figure_texts`), read from the PNG at `path`; None when the PNG holds none (a data image, or a figure
    of an earlier release). Raises OSError/PIL.UnidentifiedImageError for a missing or non-image file."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(FIGURE_LABELS_KEY)
    return None if text is None else json.loads(text)


def check_writable(folder: str | Path) -> Path:
    """Create `folder` (and parents) and prove a file can be written there, before hours of work.
    Raises `OutputError` naming the folder and the fix (read-only, no permission, disk full)."""
    folder = Path(folder)
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(folder / "write-probe")
        probe.write_bytes(b"0" * 4096)
    except OSError as exc:
        raise (disk_error(folder, exc) or OutputError(f"cannot write in {folder}: {exc.strerror or exc}; "
                                                      "choose a writable output folder")) from None
    finally:
        if probe is not None:
            with contextlib.suppress(OSError):
                probe.unlink()
    return folder

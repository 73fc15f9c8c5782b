"""Views of the authenticity stage's embedding space (ISIC study, §4.3, Fig. 2): the export the study's
code made for TensorBoard's Embedding Projector, and the 3-D t-SNE as an interactive HTML page.

* `write_projector_tsv`: tensors.tsv (one embedding per line, tab-separated floats, no header) and
  metadata.tsv (a header row, then one line per embedding in the same order) — the format the Projector
  (projector.tensorflow.org, or TensorBoard's projector plugin) loads with "Load": with more than one
  metadata column the first line must be the column names.
* `tsne_html`: tsne.csv's points in a rotatable 3-D plotly scatter (one trace per kind and class; hovering a
  point shows its key, class and kind; grey lines join each real image to its projection). The page
  carries plotly.js (`include_plotlyjs=True`, about 4.7 MB), so it opens offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import atomic_path, write_text

KIND_MARKERS = {"real": "circle", "projection": "diamond"}


def _cell(value) -> str:
    """A metadata value on one TSV cell: tabs and line breaks would shift columns or rows, so they become spaces."""
    return " ".join(str(value).split()) if any(c in str(value) for c in "\t\r\n") else str(value)


def write_projector_tsv(embeddings: np.ndarray, metadata: pd.DataFrame, out_dir: str | Path,
                        prefix: str = "") -> tuple[Path, Path]:
    """Write `<prefix>tensors.tsv` (float (N, D) `embeddings`, '%.6g', tab-separated, no header) and
    `<prefix>metadata.tsv` (the N rows of `metadata`, a header row of its column names first) into `out_dir`.
    Returns the two paths. Raises ValueError when the counts differ, the embeddings are not 2-D, or are not
    finite (the Projector cannot read NaN)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(metadata):
        raise ValueError(f"need embeddings (N, D) and N metadata rows, got {embeddings.shape} and {len(metadata)}")
    if not np.isfinite(embeddings).all():
        raise ValueError("the embeddings hold NaN or infinite values")
    out_dir = Path(out_dir)
    tensors, labels = out_dir / f"{prefix}tensors.tsv", out_dir / f"{prefix}metadata.tsv"
    with atomic_path(tensors) as tmp:
        np.savetxt(tmp, embeddings, fmt="%.6g", delimiter="\t")
    lines = ["\t".join(_cell(c) for c in metadata.columns)]
    lines += ["\t".join(_cell(v) for v in row) for row in metadata.itertuples(index=False)]
    write_text(labels, "\n".join(lines) + "\n")
    return tensors, labels


def tsne_figure_3d(coordinates: pd.DataFrame, title: str):
    """A plotly Figure of tsne.csv's rows (key, label, kind, x, y, z): a trace per (kind, label), hover text
    '<key><br>class: <label><br>kind: <kind>', and one grey line trace joining each real image to its
    projection (where both are present)."""
    # deferred: optional dependency plotly (the interactive t-SNE page only)
    import plotly.graph_objects as go
    figure = go.Figure()
    xyz = ["x", "y", "z"]
    pairs = coordinates[coordinates["kind"] == "real"].merge(coordinates[coordinates["kind"] == "projection"],
                                                              on="key", suffixes=("", "_p"))
    if len(pairs):  # per pair: real point, projected point, a gap (NaN) before the next pair
        line = np.stack([pairs[xyz].to_numpy(float), pairs[[f"{c}_p" for c in xyz]].to_numpy(float),
                         np.full((len(pairs), 3), np.nan)], axis=1).reshape(-1, 3)
        figure.add_trace(go.Scatter3d(x=line[:, 0], y=line[:, 1], z=line[:, 2], mode="lines", hoverinfo="skip",
                                      line={"color": "lightgrey", "width": 1}, name="real → projection"))
    for (kind, label), group in coordinates.groupby(["kind", "label"], sort=True):
        text = [f"{key}<br>class: {label}<br>kind: {kind}" for key in group["key"]]
        figure.add_trace(go.Scatter3d(x=group["x"], y=group["y"], z=group["z"], mode="markers", name=f"{label}, {kind}",
                                      text=text, hovertemplate="%{text}<extra></extra>",
                                      marker={"size": 4, "symbol": KIND_MARKERS.get(kind, "circle")}))
    figure.update_layout(title={"text": title, "font": {"size": 13}}, legend={"itemsizing": "constant"},
                         scene={"xaxis_title": "t-SNE 1", "yaxis_title": "t-SNE 2", "zaxis_title": "t-SNE 3"},
                         margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return figure


def tsne_html(coordinates: pd.DataFrame, title: str, out_html: str | Path) -> Path:
    """Write `tsne_figure_3d` as a self-contained HTML page (plotly.js inside: works offline) to `out_html`."""
    out_html = Path(out_html)
    with atomic_path(out_html) as tmp:
        tsne_figure_3d(coordinates, title).write_html(tmp, include_plotlyjs=True, full_html=True)
    return out_html


def projector_metadata(table: pd.DataFrame, kinds: tuple[str, ...] = ("real", "projection")) -> pd.DataFrame:
    """The metadata rows of the authenticity embeddings (real images, then their projections, in the table's
    order): key, class, kind, case (edge/central/''), predicted (the classifier's class of the real image)."""
    parts = [pd.DataFrame({"key": table["key"], "class": table["label"], "kind": kind,
                           "case": table.get("case", ""), "predicted": table["predicted"]}) for kind in kinds]
    return pd.concat(parts, ignore_index=True)


def write_embedding_views(table: pd.DataFrame, real: np.ndarray, projected: np.ndarray,
                          coordinates: pd.DataFrame, title: str, out_dir: str | Path) -> dict[str, Path]:
    """The authenticity job's views (`run_authenticity`): `out_dir`/projector/tensors.tsv + metadata.tsv of the
    embeddings (float (N, D) `real` then `projected`, rows as in `table`: authenticity.csv) and
    `out_dir`/tsne.html of `coordinates` (tsne.csv). Returns {"tensors", "metadata", "html"}."""
    out_dir = Path(out_dir)
    tensors, metadata = write_projector_tsv(np.vstack([real, projected]), projector_metadata(table),
                                            out_dir / "projector")
    return {"tensors": tensors, "metadata": metadata, "html": tsne_html(coordinates, title, out_dir / "tsne.html")}

"""A figure that holds only a sentence: the output a figure-writing verb still owes when there is nothing to draw
(CRP with no image to explain, PCX with too few test vectors for prototypes)."""

from __future__ import annotations

from pathlib import Path

from ..figures import pyplot as plt
from ..outputs import save_figure


def message_figure(text: str, out_png: str | Path) -> None:
    """A 5 × 1 inch figure (110 dpi) holding only `text`, centred and wrapped, written atomically to `out_png`
    (format from its suffix). Raises OutputError when the file cannot be written."""
    figure = plt.figure(figsize=(5, 1))
    figure.suptitle(text, x=0.5, y=0.5, ha="center", va="center", fontsize=8, wrap=True)  # the title is the message
    save_figure(out_png, figure, dpi=110)
    plt.close(figure)

"""Matplotlib for figures written to files, set up once.

Every figure of the project is drawn off-screen (PNG/SVG files on a cluster node without a display), so the
non-interactive Agg backend is selected here, once, before pyplot is imported; modules that draw import
`pyplot` from here (`from ..figures import pyplot as plt`) and save with `outputs.save_figure`.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from matplotlib import pyplot  # noqa: E402  (the backend must be chosen first)

__all__ = ["pyplot"]

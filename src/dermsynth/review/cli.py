"""`dermsynth` verbs of the review stage: their flags and what each runs (cli.py assembles them)."""

from __future__ import annotations

import sys

from ..verbs import add_verb
from .server import serve


def _review(args) -> None:
    status = serve(args.gan, args.port, args.host, args.transformations, args.config, args.reviewer)
    if status:
        sys.exit(status)


def add_verbs(sub, top) -> None:
    """Declare the review stage's verbs on the `dermsynth` subparsers."""
    p = add_verb(top, "review", _review, "Review SeFa directions in the browser (the HAM10000 study's human-in-the-loop "
             "step): try a direction on a sample, dataset image or upload, then accept it as a named transformation "
             "or reject it, written to the transformations file.", shared=("config",))
    p.add_argument("--gan", required=True, help="generator with results/latent/<gan>/sefa-<range>.npz")
    p.add_argument("--port", type=int, default=8501, help="TCP port of the page (http://<host>:<port>)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only; "
                   "any other address prints a warning: the page has no login)")
    p.add_argument("--transformations", default=None, help="file to write (default: latent.transform.file of "
                   "--config, else config/transformations.yaml)")
    p.add_argument("--reviewer", default=None, help="recorded as reviewed_by (default: the OS user)")

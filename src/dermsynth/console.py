"""What a dermsynth process writes to its console besides its own lines: logging, set up once per process, and
Python warnings as one line each.

A library's warning (torch's, timm's, lpips', ours) would print two lines by default — `file:line: Category:
message` and then the source line that raised it — and print again from every place that raises it. After
`setup()` (called by `dermsynth.cli.main` and by the Flower apps' module, the entry points of every dermsynth
process) warnings go through `logging` (`logging.captureWarnings`) to the `py.warnings` logger, formatted as one
line

    WARNING UserWarning (torch.nn.modules.module): <message, its line breaks folded into spaces>

and the same line is written once per process. Light: imports only the standard library (`dermsynth --help` and
the Snakefile stay fast).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

WARNINGS_LOGGER = "py.warnings"  # where logging.captureWarnings sends them


class _Stderr(logging.StreamHandler):
    """A handler that writes to the current `sys.stderr` (looked up at each record, so a redirected stderr — a
    test's capture, a re-opened log — gets the lines)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass


class OncePerProcess(logging.Filter):
    """Lets each distinct message through once in this process (repeats of a warning raised in a loop, or from
    several places, are dropped)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def module_of(filename: str) -> str:
    """The dotted module name of a source file, from the longest `sys.path` entry that holds it
    (`…/site-packages/torch/nn/modules/module.py` → `torch.nn.modules.module`); the file's stem when no entry
    does (a script, `<string>`)."""
    path = os.path.abspath(filename)
    roots = sorted((os.path.abspath(p or os.curdir) for p in sys.path), key=len, reverse=True)
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            parts = list(Path(os.path.relpath(path, root)).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts.pop()
            if parts and all(part.isidentifier() for part in parts):
                return ".".join(parts)
    return Path(filename).stem or str(filename)


def warning_line(message, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """One line for a warning, the signature of `warnings.formatwarning`: `<Category> (<module>): <message>`,
    whitespace runs of the message (its line breaks) folded into one space; the source line is left out."""
    text = " ".join(str(message).split())
    return f"{category.__name__} ({module_of(filename)}): {text}"


def setup(level: int = logging.INFO) -> None:
    """Set up this process's console once (later calls change nothing): the `dermsynth` logger writes
    `<message>` (a warning or worse: `<LEVEL> <message>`) to stderr at `level`, and Python warnings become one
    line each on stderr through `logging` (`WARNING <Category> (<module>): <message>`), each distinct line once.
    Other libraries' loggers (Flower's, Snakemake's) and the root logger are left as they are."""
    logging.captureWarnings(True)
    warnings.formatwarning = warning_line
    _attach(logging.getLogger(WARNINGS_LOGGER), "%(levelname)s %(message)s", OncePerProcess())
    own = logging.getLogger("dermsynth")
    if _attach(own, "%(message)s"):
        own.setLevel(level)


class _LevelFormatter(logging.Formatter):
    """`fmt` for INFO and below; `<LEVEL> ` before it for a warning or worse."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname} {text}" if record.levelno >= logging.WARNING and \
            not text.startswith(record.levelname) else text


def _attach(logger: logging.Logger, fmt: str, record_filter: logging.Filter | None = None) -> bool:
    """Give `logger` a stderr handler with `fmt` (and `record_filter`) unless setup() already did; its records
    do not also go up to the root logger's handlers. Returns whether a handler was added."""
    if any(isinstance(handler, _Stderr) for handler in logger.handlers):  # setup() was here
        return False
    handler = _Stderr()
    handler.setFormatter(_LevelFormatter(fmt))
    if record_filter is not None:
        handler.addFilter(record_filter)
    logger.addHandler(handler)
    logger.propagate = False
    return True

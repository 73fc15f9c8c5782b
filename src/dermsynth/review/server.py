"""`dermsynth review`: start the review page (review/app.py) with Streamlit's own server, on the loopback
address unless another one is asked for explicitly (then with a warning: the page writes the
transformations file and serves the dataset's images to whoever reaches it)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..config import load_config
from ..errors import ConfigError

APP = Path(__file__).with_name("app.py")
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def streamlit_command(port: int, host: str = LOOPBACK) -> list[str]:
    """The command line that serves the review page on host:port (headless, no usage statistics, uploads
    capped at render.UPLOAD_MAX_BYTES, no file watcher)."""
    # deferred: torch — the launcher only starts Streamlit; the page's process loads the renderer
    from .render import UPLOAD_MAX_BYTES
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.address", host, "--server.port", str(int(port)), "--server.headless", "true",
            "--server.fileWatcherType", "none", "--server.maxUploadSize", str(UPLOAD_MAX_BYTES // 2 ** 20),
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal"]


def review_environment(root: str | Path, gan: str, transformations: str | Path, config: str | Path,
                       reviewer: str | None) -> dict[str, str]:
    """os.environ plus the DERMSYNTH_REVIEW_* variables the page reads (see review/app.py); relative paths
    are taken from `root`."""
    root = Path(root).resolve()
    env = dict(os.environ)
    env.update({"DERMSYNTH_REVIEW_ROOT": str(root), "DERMSYNTH_REVIEW_GAN": gan,
                "DERMSYNTH_REVIEW_TRANSFORMATIONS": str((root / transformations).resolve()),
                "DERMSYNTH_REVIEW_CONFIG": str((root / config).resolve())})
    if reviewer:
        env["DERMSYNTH_REVIEW_REVIEWER"] = reviewer
    return env


def prepare(gan: str, port: int, host: str, transformations: str | None, config: str, reviewer: str | None,
            root: str | Path = ".") -> tuple[list[str], dict[str, str], list[str]]:
    """(command, environment, warnings) for serving the page; nothing is started.

    The transformations file defaults to latent.transform.file of `config` (when it exists), else
    config/transformations.yaml; relative paths are taken from `root`. Raises ConfigError when `gan` has no checkpoint with SeFa outputs under
    `root`/results, or the port is outside 1–65535."""
    # deferred: torch — the launcher only starts Streamlit; the page's process loads the renderer
    from .render import list_generators
    root = Path(root)
    available = {g.name: g for g in list_generators(root)}
    if gan not in available:
        raise ConfigError(f"generator {gan!r} has no results/gan/{gan}/network-final.pt with SeFa outputs "
                          f"(results/latent/{gan}/sefa-<range>.npz) under {root.resolve()}; available: "
                          f"{', '.join(available) or 'none'}")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"port {port} is not in 1–65535")
    if transformations is None:
        transformations = "config/transformations.yaml"
        if (root / config).exists():
            transformations = load_config(root / config)["latent"]["transform"]["file"]
    warnings = []
    if not is_loopback(host):
        warnings.append(f"binding {host}: the review page (which writes {transformations} and shows the dataset's "
                        "images) is reachable from other machines, without any login")
    return streamlit_command(port, host), review_environment(root, gan, transformations, config, reviewer), warnings


def serve(gan: str, port: int = 8501, host: str = LOOPBACK, transformations: str | None = None,
          config: str = "config/config.yaml", reviewer: str | None = None, root: str | Path = ".") -> int:
    """Start the page and wait for it (Ctrl-C or SIGTERM stops it and the Streamlit process). Returns Streamlit's
    exit status."""
    command, env, warnings = prepare(gan, port, host, transformations, config, reviewer, root)
    for warning in warnings:
        print(f"dermsynth review: WARNING: {warning}", file=sys.stderr)
    if not Path(env["DERMSYNTH_REVIEW_CONFIG"]).exists():
        print(f"dermsynth review: no config {config}: every dataset under results/data is shown; the LPIPS threshold, "
              "ingest and projection settings are the schema's defaults (docs/review.md)", file=sys.stderr)
    print(f"dermsynth review: http://{host}:{port} (generator {gan}, file {env['DERMSYNTH_REVIEW_TRANSFORMATIONS']})",
          file=sys.stderr, flush=True)

    def stop(signum, frame):  # SIGTERM (a test, a job scheduler) stops the page like Ctrl-C, never orphaning it
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    process = subprocess.Popen(command, env=env, cwd=str(Path(root).resolve()))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)

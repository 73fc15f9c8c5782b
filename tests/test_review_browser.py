"""`dermsynth review` in a real browser: the CLI serves the page, headless Chromium (Debian's, driven by
Playwright) picks a direction, moves the slider, sees the edited image change, accepts it under a name;
the YAML on disk holds it and `snakemake -n` plans that transformation's jobs (and keeps the others' config)."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermsynth.latent.named import load_transformations

from .conftest import REPO
from .test_review import GAN, make_workdir

pytestmark = pytest.mark.workflow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _planned_transforms(workdir: Path) -> dict[str, str]:
    """{transformation: its options file} of the transform jobs `snakemake -n -p` plans for Table 1."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                             "-n", "-p", "results/tables/table1.csv"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    return dict((name, options) for options, name in
                re.findall(r"dermsynth latent transform --options (\S+) [^\n]*?--out results/latent/transformations/(\S+)",
                           text))


def _displayed_pixels(page, locator) -> np.ndarray:
    """The pixels of the image an <img> shows, once the browser has loaded it (fetched from its src)."""
    locator.evaluate("img => img.complete && img.naturalWidth > 0 ? null : new Promise(done => "
                     "img.addEventListener('load', done, {once: true}))")
    body = page.request.get(locator.evaluate("img => img.src")).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(np.int16)


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="no Chromium (CI installs it)")
def test_review_in_chromium_accepts_a_direction_and_snakemake_plans_it(tmp_path):
    from playwright.sync_api import sync_playwright
    workdir = make_workdir(tmp_path)
    before = _planned_transforms(workdir)
    assert sorted(before) == ["BCV", "GV", "PS", "SPV", "SV"]
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "dermsynth", "review", "--gan", GAN, "--port", str(port),
                               "--reviewer", "browser-test"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, by default

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/")
            edited = page.locator(".st-key-edited_image img")
            edited.wait_for(timeout=120_000)
            page.locator(".st-key-direction").click()
            page.get_by_role("option", name=re.compile(r"^#3 ")).click()
            page.get_by_text("edited: direction #3 at +0.00").wait_for(timeout=60_000)
            start = _displayed_pixels(page, edited)

            slider = page.locator(".st-key-magnitude").get_by_role("slider")
            slider.focus()
            started = time.perf_counter()
            slider.press("End")  # to the range's high end, +3
            page.get_by_text("edited: direction #3 at +3.00").wait_for(timeout=60_000)
            print(f"slider move → new image shown in Chromium: {(time.perf_counter() - started) * 1000:.0f} ms "
                  f"(page's render time: {page.get_by_test_id('stMetric').nth(2).inner_text().splitlines()[-1]})")
            moved = _displayed_pixels(page, edited)
            assert start.shape == moved.shape == (64, 64, 3)
            assert np.abs(moved - start).mean() > 1.0  # the displayed pixels changed

            page.locator(".st-key-name input").fill("BROWSED")
            page.locator(".st-key-name input").press("Enter")
            page.locator(".st-key-description input").fill("what the reviewer saw")
            page.locator(".st-key-description input").press("Enter")
            page.locator(".st-key-accept button").click()
            page.get_by_text("Saved transformation BROWSED").wait_for(timeout=60_000)
            shot = workdir / "results" / "review" / "review-accepted.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert Image.open(shot).size[0] >= 1000
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    import psutil
    time.sleep(1)
    left = [p for p in psutil.process_iter(["cmdline"]) if f"--server.port {port}" in " ".join(p.info["cmdline"] or [])]
    assert not left, "the Streamlit process outlived `dermsynth review`"

    entries = load_transformations(workdir / "config" / "transformations.yaml", [GAN])
    new = entries[-1]
    assert (new["name"], new["description"], new["gan"], new["layer_range"], new["direction"], new["magnitude"]) == \
        ("BROWSED", "what the reviewer saw", GAN, "all", 3, [-3.0, 3.0])
    assert new["review"]["reviewed_by"] == "browser-test"
    after = _planned_transforms(workdir)
    assert sorted(after) == ["BCV", "BROWSED", "GV", "PS", "SPV", "SV"]
    assert {name: after[name] for name in before} == before  # the other transformations' configs are unchanged

    # re-reviewing an entry without changing it (only its review: block) re-plans nothing new either
    from dermsynth.review.store import TransformationsFile
    TransformationsFile(workdir / "config" / "transformations.yaml", [GAN]).accept(
        name="BROWSED", description="what the reviewer saw", gan=GAN, layer_range="all", direction=3,
        magnitude=(-3.0, 3.0), checkpoint_sha256="f" * 64, reviewed_by="second reviewer", replace=True)
    assert _planned_transforms(workdir) == after

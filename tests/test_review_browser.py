"""`dermsynth review` in a real browser: the CLI serves the page, headless Chromium (Debian's, driven by
Playwright) picks a direction, moves the slider, sees the edited image change, accepts it under a name;
the YAML on disk holds it and `snakemake -n` plans that transformation's jobs (and keeps the others' config).
Without an encoder, an upload is projected only on request, with its steps shown, and closing the tab stops it."""

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


def _serve(workdir: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    """`dermsynth review` on a free port, once Streamlit answers its health check."""
    port = _free_port()
    log = log_path.open("w")
    server = subprocess.Popen([sys.executable, "-m", "dermsynth", "review", "--gan", GAN, "--port", str(port),
                               "--reviewer", "browser-test"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    log.close()
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return server, port
        except OSError:
            pass
        assert server.poll() is None and time.time() < deadline, log_path.read_text()
        time.sleep(0.5)


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="no Chromium (CI installs it)")
def test_review_in_chromium_projects_on_request_and_closing_the_tab_stops_it(tmp_path):
    """No e4e encoder: an upload is not inverted behind the reviewer's back; the page says so, the button starts
    the projection, its steps count up on the page, and closing the tab stops the worker (the server's log says
    'cancelled (the page was closed)', and the steps stop there)."""
    from playwright.sync_api import sync_playwright
    workdir = make_workdir(tmp_path)
    log = tmp_path / "server.log"
    server, port = _serve(workdir, log)
    lesion = tmp_path / "lesion.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(lesion)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator(".st-key-edited_image img").wait_for(timeout=120_000)
            page.get_by_text("upload", exact=True).click()
            page.locator(".st-key-upload input[type=file]").set_input_files(str(lesion))
            page.get_by_text("no e4e encoder for ham10000").wait_for(timeout=60_000)
            steps = page.locator(".st-key-projection_steps input")
            steps.fill("100000")
            steps.press("Enter")
            button = page.locator(".st-key-project button")
            page.get_by_text("Project into W (100000 steps").wait_for(timeout=30_000)
            button.click()
            progress = page.get_by_text(re.compile(r"projection of upload lesion\.png: [1-9]\d*/100000 steps"))
            progress.wait_for(timeout=120_000)
            shown = int(re.search(r": (\d+)/100000", progress.inner_text()).group(1))
            time.sleep(2)  # the page redraws the count every second
            assert int(re.search(r": (\d+)/100000", progress.inner_text()).group(1)) > shown
            page.close()  # the tab: the session ends, the worker must stop
            deadline = time.time() + 60
            while "cancelled (the page was closed)" not in log.read_text() and time.time() < deadline:
                time.sleep(0.5)
            browser.close()
        ended = re.search(r"projection of upload lesion\.png cancelled \(the page was closed\) at step (\d+)/100000",
                          log.read_text())
        assert ended, log.read_text()[-3000:]
        assert int(ended.group(1)) < 100_000
        assert server.poll() is None  # the server runs on; only the session's work stopped
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="no Chromium (CI installs it)")
def test_review_in_chromium_accepts_a_direction_and_snakemake_plans_it(tmp_path):
    from playwright.sync_api import sync_playwright
    workdir = make_workdir(tmp_path)
    before = _planned_transforms(workdir)
    assert sorted(before) == ["BCV", "GV", "PS", "SPV", "SV"]
    server, port = _serve(workdir, tmp_path / "server.log")
    try:
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

"""What a dermsynth process prints (issue 29, item 3): GAN training's tick lines and "wrote" lines, progress that
never passes its total and writes whole lines to a log file, library warnings as one line each.

The training runs are real `dermsynth gan train` processes on a tiny store (tests/test_reliability_gan.py's:
24 images at 16², a 3-block generator) whose stderr is a pipe, as in a Snakemake log."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from dermsynth.console import module_of, warning_line
from dermsynth.progress import Progress
from tests.test_reliability_gan import ENV, _config, _store, _train_cmd

TICK = re.compile(r"^train-gan tiny: tick (?P<tick>\d+) kimg (?P<done>[\d.]+)/(?P<total>[\d.]+) \((?P<pct>\d+)%\) "
                  r"time \S+ sec/tick [\d.]+ sec/kimg [\d.]+ maint [\d.]+ (?P<losses>.*?) augment (?P<p>[\d.]+) "
                  r"gpumem cpu left \S+$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real training run: 0.022 kimg of batch 4 (6 steps, really 0.024 kimg: the last batch is whole), a
    snapshot every step, a tick every 2 steps, ADA on; its stderr and output folder."""
    root = tmp_path_factory.mktemp("console")
    lmdb, manifest = _store(root / "set16", 16)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(_config(root, kimg=0.022, snapshot_kimg=0.004, tick_kimg=0.008, augment="bgc",
                                             augment_p=0.3, ada_kimg=0.1)))
    out = root / "gan"
    done = subprocess.run(_train_cmd({"root": root, "lmdb": lmdb, "manifest": manifest}, out, config),
                          capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr, out


def _losses(text: str) -> dict[str, float]:
    pairs = text.split()
    return {pairs[i]: float(pairs[i + 1]) for i in range(0, len(pairs), 2)}


def test_a_tick_line_per_tick_with_the_fields_stylegan_users_read(run):
    err, out = run
    ticks = [TICK.match(line) for line in err.splitlines() if ": tick " in line]
    assert len(ticks) == 3 and all(ticks), err
    assert [int(m["tick"]) for m in ticks] == [1, 2, 3]
    assert [m["done"] for m in ticks] == ["0.008", "0.016", "0.024"]
    assert {m["total"] for m in ticks} == {"0.024"}  # the steps the run takes (6 × 4), not the 0.022 asked
    assert [int(m["pct"]) for m in ticks] == [33, 67, 100]
    assert "6 steps of 4 on 1 × cpu (0.024 kimg)" in err.splitlines()[0] and err.startswith("train-gan tiny:")


def test_tick_losses_are_the_means_over_the_tick_of_the_logged_steps(run):
    """The training log has every step (a snapshot each step): the tick's G and D are the means of its two
    steps' losses, R1 and the path-length penalty the means over the steps that computed them."""
    err, out = run
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2, 3, 4, 5, 6]
    ticks = [_losses(m["losses"]) for m in map(TICK.match, err.splitlines()) if m]
    for tick, steps in zip(ticks, (log[0:2], log[2:4], log[4:6])):
        assert tick["G"] == pytest.approx(np.mean([x["loss_G"] for x in steps]), rel=1e-3)
        assert tick["D"] == pytest.approx(np.mean([x["loss_D"] for x in steps]), rel=1e-3)
        for key, label in (("r1_penalty", "R1"), ("pl_penalty", "PL")):
            computed = [x[key] for x in steps if key in x]
            assert (label in tick) == bool(computed)
            if computed:
                assert tick[label] == pytest.approx(np.mean(computed), rel=1e-3)
    # R1 every 16 steps (step 0 here), the path length every 4 (steps 0 and 4): lazy regularisation
    assert "R1" in ticks[0] and "R1" not in ticks[1] and "PL" in ticks[0] and "PL" in ticks[2]


def test_augment_p_of_the_tick_line_is_ada_s(run):
    err, out = run
    last = [m for m in map(TICK.match, err.splitlines()) if m][-1]
    final = json.loads((out / "network-final.json").read_text())
    assert float(last["p"]) == pytest.approx(final["augment_p"], abs=5e-4)


def test_a_wrote_line_for_each_snapshot_and_the_final_network(run):
    err, out = run
    wrote = [line.split("wrote ", 1)[1] for line in err.splitlines() if line.startswith("train-gan tiny: wrote ")]
    snapshots = sorted(str(p) for p in out.glob("network-snapshot-step*.pt"))
    assert len(snapshots) == 6 and wrote == [*snapshots, str(out / "network-final.pt")]


def test_the_log_holds_whole_lines_only(run):
    err, _ = run
    assert "\r" not in err and "\x1b[" not in err  # no bar redraws, no terminal codes
    lines = err.splitlines()
    assert all(line.startswith(("train-gan tiny:", "WARNING ")) for line in lines), lines


def test_progress_in_a_log_file_prints_plain_lines_and_never_passes_the_total():
    stream = io.StringIO()
    progress = Progress(10, "work", interval=0, stream=stream)
    for _ in range(4):
        progress.update(2)
    progress.update(3)  # a caller's count past its total: the total grows with it
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 5
    assert lines[0].startswith("work: 2/10 (20%)") and lines[-1].startswith("work: 11/11 (100%)")


def test_progress_on_a_terminal_draws_a_live_bar_with_lines_above_it():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(2000, "train-gan x", unit="kimg", scale=1e-3, stream=stream, lines=False)
    progress.update(1000)
    progress.write("train-gan x: tick 1")
    progress.update(1000)
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "2.000/2.000 kimg" in text and "100%" in text
    assert "train-gan x: tick 1\n" in text


def test_the_demo_ham10000_progress_counts_to_its_true_total(tmp_path):
    """The demo's HAM10000 total was an estimate (lesions × 1.4): 563/560 (101%) in a user's log."""
    from dermsynth.config import validate_config
    from dermsynth.data.demo.archives import write_ham10000
    from tests.conftest import demo_config
    cfg = validate_config(demo_config(tmp_path))["demo"]["ham10000"]
    cfg = {**cfg, "lesions": 20}
    stream = io.StringIO()
    rows = write_ham10000(tmp_path / "ham", cfg, np.random.default_rng(7), [],
                          Progress(5, "demo HAM10000", interval=0, stream=stream))  # an estimate far off
    totals = {line.split("/")[1].split()[0] for line in stream.getvalue().splitlines()}
    assert totals == {str(len(rows))} and len(rows) > 20  # every line counts towards the true total


def test_a_library_warning_inside_a_verb_is_one_line_once(tmp_path):
    """A verb (check-config's handler in `dermsynth.cli`, replaced in the process by one that calls torch the discouraged way three
    times, and warns with a two-line message twice) run through `dermsynth.cli.main`."""
    script = textwrap.dedent("""
        import sys, warnings, torch
        import dermsynth.cli as stage
        def verb(args):
            for _ in range(3):
                torch.tensor(torch.ones(2))  # torch: "To copy construct from a tensor, ..." (UserWarning)
            for _ in range(2):
                warnings.warn("first line\\n    second line", UserWarning)
        stage._check_config = verb
        from dermsynth.cli import main
        sys.exit(main(["check-config"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("WARNING UserWarning (") and "To copy construct from a tensor" in lines[0]
    assert lines[1].startswith("WARNING UserWarning (") and lines[1].endswith("): first line second line")


def test_warning_lines_name_the_module_and_fold_the_message():
    import torch.nn.modules.module as torch_module
    assert module_of(torch_module.__file__) == "torch.nn.modules.module"
    assert warning_line("a\n  b", DeprecationWarning, torch_module.__file__, 1, "source line") == \
        "DeprecationWarning (torch.nn.modules.module): a b"

"""One writer per output (issue 27, kind 2) for the verbs whose output is one file (a table, a figure, a
curve): while another process holds the output's lock, each verb is refused at once in one line naming the
holder, and the output is not written. The long-running verbs are raced and killed in their stages' own
tests/test_reliability_<stage>.py; this file covers the rest, each verb as a real `dermsynth` process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dermsynth.locks import exclusive
from .race import DERMSYNTH

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config" / "config.yaml")

# verb → its arguments (inputs need not exist: the lock is taken before any input is read), with OUT the output
SINGLE_FILE_VERBS = {
    "explain frame-score": ["--lmdb", "l", "--manifest", "m.csv", "--out", "OUT"],
    "explain frame-accuracy": ["--config", CONFIG, "--lmdb", "l", "--manifest", "m.csv", "--models", "a", "--out", "OUT"],
    "classify filter-synthetic": ["--manifest", "m.csv", "--predictions", "p.csv", "--out", "OUT"],
    "classify tables": ["--models", "a", "--sizes", "SA-2k", "--table2", "OUT", "--table3", "t3.csv",
                          "--figures", "figures"],
    "classify isic-table2": ["--models", "a", "--out", "OUT"],
    "classify isic-edge-table": ["--config", CONFIG, "--models", "a", "--classifier", "c", "--baseline", "b",
                        "--edge-set", "e", "--manifest", "m.csv", "--out", "OUT"],
    "metrics table1": ["--metrics", "a.json", "--out", "OUT", "--data-source", "demo"],
    "latent lpips-table": ["--reports", "a.json", "--out", "OUT", "--data-source", "demo"],
    "federated evaluate": ["--config", CONFIG, "--run", "isic", "--lmdb", "l", "--federated", "f.csv",
                           "--federated-network", "n.pt", "--out", "OUT"],
    "federated table": ["--config", CONFIG, "--run", "isic", "--curves", "c.csv", "--rounds", "r.csv", "--out",
                        "OUT", "--figure", "f.png"],
    "gan sample-sheet": ["--network", "n.pt", "--out", "OUT"],
}


@pytest.mark.parametrize("verb", sorted(SINGLE_FILE_VERBS))
def test_a_single_file_verb_is_refused_while_another_process_writes_its_output(verb, tmp_path):
    out = tmp_path / ("sheet.png" if verb == "gan sample-sheet" else "table.csv")
    argv = [str(out) if a == "OUT" else a for a in SINGLE_FILE_VERBS[verb]]
    with exclusive(out, "another-writer"):
        result = subprocess.run([*DERMSYNTH, *verb.split(), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"another another-writer (pid {os.getpid()}" in lines[0] and f"is writing to {out}" in lines[0]
    assert not out.exists()

"""Issue 27 for the review stage's transformations file: one writer at a time (two reviewers accepting at the
same moment lose nothing), a kill at any moment leaves the YAML complete and valid, and a wrong file is one line.

Real processes (multiprocessing's spawn, and `python -c` children killed with SIGKILL through tests/race.py);
nothing is mocked."""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import pytest
import yaml

from dermsynth.latent.named import load_transformations
from dermsynth.locks import BusyError, exclusive
from dermsynth.review import store

from .race import killed_at

START = """# transformations reviewed on the page
transformations:
  - name: SPV
    description: size and pigment variation
    gan: ham10000
    layer_range: coarse
    direction: 0
    magnitude: [-3.0, 3.0]
"""
PER_REVIEWER = 10


def _accept(file: store.TransformationsFile, name: str, direction: int = 3) -> dict:
    return file.accept(name=name, description=f"direction seen as {name}", gan="ham10000", layer_range="all",
                       direction=direction, magnitude=(-1.0, 1.0), checkpoint_sha256="0" * 64, reviewed_by=name)


def _reviewer(path: str, who: str, barrier) -> None:
    """One review page's process: wait for the other, then accept PER_REVIEWER directions one after another."""
    file = store.TransformationsFile(path)
    barrier.wait()
    for i in range(PER_REVIEWER):
        _accept(file, f"{who}{i}", direction=i)


def test_two_reviewers_accepting_at_once_lose_no_entry(tmp_path):
    path = tmp_path / "transformations.yaml"
    path.write_text(START)
    context = mp.get_context("spawn")
    barrier = context.Barrier(2)
    reviewers = [context.Process(target=_reviewer, args=(str(path), who, barrier)) for who in ("alice", "bob")]
    for process in reviewers:
        process.start()
    for process in reviewers:
        process.join(timeout=300)
    assert [p.exitcode for p in reviewers] == [0, 0]
    names = [entry["name"] for entry in load_transformations(path)]
    expected = {f"{who}{i}" for who in ("alice", "bob") for i in range(PER_REVIEWER)}
    assert set(names) == expected | {"SPV"} and len(names) == len(expected) + 1  # none lost, none doubled
    assert path.read_text().startswith(START)  # the first entry and its comment stay as written


def test_a_change_waits_for_the_lock_and_says_who_holds_it_when_it_does_not_come(tmp_path, monkeypatch):
    path = tmp_path / "transformations.yaml"
    path.write_text(START)
    monkeypatch.setattr(store, "LOCK_TIMEOUT", 0.2)
    with exclusive(path, "review"):  # another change in progress (a flock of another open file: it conflicts)
        with pytest.raises(BusyError, match=r"another review \(pid \d+ .*is writing to .*transformations.yaml"):
            _accept(store.TransformationsFile(path), "LATE")
    assert path.read_text() == START
    _accept(store.TransformationsFile(path), "LATE")  # once it is released, the change goes through
    assert [e["name"] for e in load_transformations(path)] == ["SPV", "LATE"]


ACCEPT_LOOP = """
import sys
from dermsynth.review.store import TransformationsFile
file = TransformationsFile(sys.argv[1])
print("accepting", file=sys.stderr, flush=True)
for i in range(int(sys.argv[2])):
    file.accept(name=f"K{i}", description="killed reviewer", gan="ham10000", layer_range="all", direction=i,
                magnitude=(-1.0, 1.0), checkpoint_sha256="0" * 64, reviewed_by="k")
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_reviewer_killed_at_any_moment_leaves_a_complete_valid_file_and_the_next_accept_works(tmp_path, seed):
    path = tmp_path / "transformations.yaml"
    path.write_text(START)
    killed_at([sys.executable, "-c", ACCEPT_LOOP, str(path), "400"], seed=seed, cwd=tmp_path, low=0.05, high=1.5,
              ready="accepting")
    names = [entry["name"] for entry in load_transformations(path)]  # parses and passes the workflow's check
    assert names == ["SPV"] + [f"K{i}" for i in range(len(names) - 1)]  # a prefix of the accepts: none half-made
    assert path.read_text().startswith(START)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (path.name, f".{path.name}.lock")]
    assert all(name.startswith(f".{path.name}.") and name.endswith(".tmp") for name in leftovers), leftovers
    _accept(store.TransformationsFile(path), "AFTER", direction=999)  # the kernel released the killed one's lock
    assert [e["name"] for e in load_transformations(path)][-1] == "AFTER"


@pytest.mark.parametrize("content, says", [
    (None, "is a folder, not a transformations file"),
    (b"\xff\xfe\x00\x01 binary", "is not a text (YAML) file"),
    (b"", "expected a non-empty list under 'transformations:'"),
    (b"transformations: [a,\n", "not valid YAML"),
])
def test_a_wrong_transformations_file_is_one_message_and_is_never_overwritten(tmp_path, content, says):
    path = tmp_path / "transformations.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    file = store.TransformationsFile(path)
    assert says in file.problem()
    with pytest.raises(store.InvalidTransformationsFile, match="will not be overwritten"):
        _accept(file, "NEW")
    assert path.is_dir() if content is None else path.read_bytes() == content


def test_a_read_only_folder_is_one_line_and_reading_needs_no_write_permission(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "transformations.yaml"
    path.write_text(START)
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_text("x")
            pytest.skip("running as a user that may write into read-only folders (root)")
        except PermissionError:
            pass
        file = store.TransformationsFile(path)
        assert file.problem() is None and [e["name"] for e in file.transformations()] == ["SPV"]
        with pytest.raises(store.DermsynthError, match=r"cannot write .*ro.*: Permission denied; .*permissions"):
            _accept(file, "NEW")
        assert path.read_text() == START
    finally:
        folder.chmod(0o755)


def test_the_repository_transformations_file_loads_as_yaml():
    """config/transformations.yaml is what `dermsynth review` writes by default: it must stay a valid file."""
    path = Path(__file__).resolve().parents[1] / "config" / "transformations.yaml"
    assert store.TransformationsFile(path).problem() is None
    assert yaml.safe_load(path.read_text())["transformations"]

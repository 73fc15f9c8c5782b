"""The transformations file as a reviewer changes it: accept a direction (a named entry), reject one (the
`rejected:` list), see which directions are used, and which reviews a changed generator made stale.

Every write is a round trip (ruamel.yaml): comments, key order, quoting and the other entries stay as they
were. The new text is first written to a temporary file beside the target and checked with the workflow's
own `load_transformations` (plus the checks of the `rejected:` list below); only a valid text replaces the
file (outputs.atomic_path: a name unique to the process, then os.replace, atomic on one file system).
Every change is one read-modify-write cycle under the file's exclusive lock (locks.exclusive on
`.<file>.lock`, waited for up to LOCK_TIMEOUT seconds): two reviewers accepting at the same moment (two tabs,
two `dermsynth review` servers) each re-read the file the other just wrote, so no accepted entry is lost. A file that is already invalid is never written: every
change raises `InvalidTransformationsFile` with the validator's message, so the reviewer fixes it by hand.

An accepted entry carries its review under `review:` (reviewed_by, reviewed_on, generator — the digest of the
generator's weights, `latent.identity.generator_digest`, which SeFa files and inversions record too —,
checkpoint_sha256 — of the network file); the
workflow leaves that key out of the per-transformation config it hashes (workflow/rules/common.smk), so
re-reviewing an entry without changing it re-runs nothing. A rejected direction is recorded as

    rejected:
      - {gan, layer_range, direction, reason, reviewed_by, reviewed_on, generator, checkpoint_sha256}

An entry (or record) reviewed on another checkpoint is stale; an entry without a review (the shipped
config/transformations.yaml) was never reviewed on this user's generator (`latent.named.review_state`).
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from ..errors import ConfigError, DermsynthError
from ..latent.named import (LAYER_RANGES, NOT_REVIEWED, REVIEW_KEY, STALE, ReviewState, checkpoint_sha256,
                            load_transformations, review_state)
from ..locks import exclusive
from ..outputs import atomic_path, disk_error

LOCK_TIMEOUT = 30.0  # seconds a change waits for another reviewer's change of the same file
HEADER = ("# Transformations reviewed with `dermsynth review`: SeFa directions of a generator, named, with a\n"
          "# magnitude range (distance in W along the unit direction). See config/transformations.yaml.\n")


class ReviewError(DermsynthError):
    """A review action that cannot be saved (invalid name, unknown direction, …); the file is unchanged."""


class InvalidTransformationsFile(ReviewError):
    """The transformations file on disk does not pass the workflow's checks; it is never overwritten."""


def _yaml():
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout of config/transformations.yaml
    yaml.width = 4096
    return yaml


_HASHES: dict[tuple[str, int, int], str] = {}


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 (64 hex characters) of a generator checkpoint's bytes, cached per (path, size, mtime).

    Raises FileNotFoundError when the file does not exist."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = checkpoint_sha256(path)
    return _HASHES[key]


def reviewer_name(option: str | None = None) -> str:
    """`option` when given (stripped, non-empty), else the OS user, else 'unknown'."""
    if option and option.strip():
        return option.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return "unknown"


def now_iso() -> str:
    """The current UTC time as ISO 8601 to the second, e.g. '2026-11-30T02:31:05+00:00'."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class StaleReview:
    """A saved entry not reviewed on its generator's current checkpoint: reviewed on another one (state STALE;
    `reviewed` is the recorded identity) or never (NOT_REVIEWED: a shipped or hand-written entry)."""
    kind: str              # "transformation" or "rejected"
    label: str             # the transformation's name, or "<gan> <layer_range> #<direction>"
    gan: str
    review: ReviewState

    @property
    def reviewed(self) -> str:
        """The identity recorded with the review ('' when none)."""
        return self.review.reviewed


def _plain(node):
    """ruamel containers → plain dicts/lists (for display and tests)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _check_rejected(rejected, where: str) -> list[str]:
    if rejected is None:
        return []
    if not isinstance(rejected, list):
        return [f"{where}: 'rejected:' must be a list"]
    problems = []
    for i, entry in enumerate(rejected):
        at = f"{where}: rejected[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{at} is not a mapping")
            continue
        missing = [k for k in ("gan", "layer_range", "direction", "reason") if k not in entry]
        if missing:
            problems.append(f"{at} lacks {', '.join(missing)}")
            continue
        if entry["layer_range"] not in LAYER_RANGES:
            problems.append(f"{at}: layer_range {entry['layer_range']!r} is not one of {', '.join(LAYER_RANGES)}")
        if not isinstance(entry["direction"], int) or isinstance(entry["direction"], bool) or entry["direction"] < 0:
            problems.append(f"{at}: direction must be an eigenvector index ≥ 0")
        if not str(entry["reason"] or "").strip():
            problems.append(f"{at}: the reason is empty")
    return problems


def validate_text(text: str, path: str | Path, gans: list[str] | None = None) -> list[dict]:
    """Check a transformations file's text exactly as the workflow does (`load_transformations`, read by
    PyYAML) plus the `rejected:` list; the text is written to a temporary file of the system's temporary
    folder (never beside `path`: checking a file needs no write permission on its folder).

    Returns the transformations (plain dicts). Raises ConfigError with the validator's message, the
    temporary name replaced by `path`, and OutputError when the temporary folder cannot be written."""
    path = Path(path)
    handle, tmp = None, None
    try:
        handle, tmp = tempfile.mkstemp(prefix=f"dermsynth-check-{path.name}.", suffix=".yaml")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise (disk_error(tmp or tempfile.gettempdir(), exc) or exc) from None
    try:
        try:
            entries = load_transformations(tmp, gans)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(tmp, str(path))) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}".replace(tmp, str(path))) from None
        raw = yaml.safe_load(text) or {}
        problems = _check_rejected(raw.get("rejected"), str(path))
        if problems:
            raise ConfigError("invalid transformations:\n" + "\n".join(f"  - {p}" for p in problems))
        return entries
    finally:
        Path(tmp).unlink(missing_ok=True)


class TransformationsFile:
    """One transformations file (it need not exist yet): read, check, accept and reject directions.

    `gans`, when given, are the generators the workflow inverts (latent.inversion.gans): an entry for
    another generator is refused, as the workflow would refuse it."""

    def __init__(self, path: str | Path, gans: list[str] | None = None):
        self.path = Path(path)
        self.gans = gans

    # ---- reading -------------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """The validator's message when the file on disk is invalid (or is a folder, not text, unreadable),
        else None (also when it is missing)."""
        if not self.path.exists():
            return None
        try:
            validate_text(self._text(), self.path, self.gans)
        except ConfigError as exc:
            return str(exc)
        return None

    def _text(self) -> str:
        """The file's text. Raises ConfigError (one line) when it is a folder, not UTF-8 text or unreadable."""
        if self.path.is_dir():
            raise ConfigError(f"{self.path} is a folder, not a transformations file: give the path of a YAML file "
                              "(e.g. config/transformations.yaml)")
        try:
            return self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path} is not a text (YAML) file: give the transformations YAML file") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}; fix its permissions or give "
                              "another file") from None

    def _document(self):
        """The round-trip document (a new one with a header comment when the file does not exist).

        Raises InvalidTransformationsFile when the file on disk fails the checks."""
        message = self.problem()
        if message:
            raise InvalidTransformationsFile(f"{self.path} is invalid and will not be overwritten; fix it first:\n"
                                             f"{message}")
        if not self.path.exists():
            return _yaml().load(HEADER + "\ntransformations: []\n")
        return _yaml().load(self._text())

    def transformations(self) -> list[dict]:
        """The accepted entries as plain dicts ([] when the file is missing). Raises InvalidTransformationsFile."""
        return _plain(list(self._document().get("transformations") or []))

    def rejected(self) -> list[dict]:
        """The `rejected:` records as plain dicts. Raises InvalidTransformationsFile."""
        return _plain(list(self._document().get("rejected") or []))

    def usage(self, gan: str, layer_range: str, generator: str | None = None,
              checkpoint: str | None = None) -> dict[int, dict]:
        """{direction: {"names": [transformation names], "rejected": [reasons], "reviews": [ReviewState of each
        name]}} for one generator and layer range: what the direction list marks. `generator` and `checkpoint`
        identify the generator now (see `latent.named.review_state`). Raises InvalidTransformationsFile."""
        document = self._document()
        marks: dict[int, dict] = {}

        def mark(entry) -> dict:
            return marks.setdefault(int(entry["direction"]), {"names": [], "rejected": [], "reviews": []})
        for entry in document.get("transformations") or []:
            if entry.get("gan") == gan and entry.get("layer_range") == layer_range:
                mark(entry)["names"].append(str(entry["name"]))
                mark(entry)["reviews"].append(review_state(entry.get(REVIEW_KEY), generator, checkpoint))
        for entry in document.get("rejected") or []:
            if entry.get("gan") == gan and entry.get("layer_range") == layer_range:
                mark(entry)["rejected"].append(str(entry["reason"]))
        return marks

    def stale(self, current: dict[str, tuple[str | None, str | None] | str | None]) -> list[StaleReview]:
        """Entries and rejections not reviewed on their generator's current checkpoint: reviewed on another
        (STALE), or — accepted entries only — never reviewed (NOT_REVIEWED: the shipped file's entries).

        `current`: {gan: (generator digest or None, checkpoint_sha256 or None)}, or {gan: checkpoint_sha256}; None
        when the checkpoint is missing (then every review of it is stale). Generators not in it are not judged.
        Raises InvalidTransformationsFile."""
        document = self._document()
        now = {gan: value if isinstance(value, tuple) else (None, value) for gan, value in current.items()}
        out = []
        for entry in document.get("transformations") or []:
            gan = entry.get("gan")
            if gan in now:
                state = self._judge(entry.get(REVIEW_KEY), now[gan])
                if state.state in (STALE, NOT_REVIEWED):
                    out.append(StaleReview("transformation", str(entry["name"]), gan, state))
        for entry in document.get("rejected") or []:
            gan = entry.get("gan")
            if gan in now:
                state = self._judge(entry, now[gan])
                if state.state == STALE:
                    out.append(StaleReview("rejected", f"{gan} {entry['layer_range']} #{entry['direction']}", gan,
                                           state))
        return out

    @staticmethod
    def _judge(record, identity: tuple[str | None, str | None]) -> ReviewState:
        if identity == (None, None) and record and any(k in record for k in ("generator", "checkpoint_sha256")):
            return ReviewState(STALE, str(record.get("reviewed_on") or ""),
                               str(record.get("generator") or record.get("checkpoint_sha256")))  # checkpoint gone
        return review_state(record, *identity)

    # ---- writing -------------------------------------------------------------------------------------
    def accept(self, *, name: str, description: str, gan: str, layer_range: str, direction: int,
               magnitude: tuple[float, float], checkpoint_sha256: str, reviewed_by: str,
               direction_count: int | None = None, replace: bool = False, generator: str | None = None) -> dict:
        """Add (or, with replace=True, update in place) the transformation `name`; a `rejected:` record of
        the same (gan, layer_range, direction) is removed. Returns the saved entry (plain dict).

        `magnitude` is (low, high) in W distance, low ≤ high; `direction_count`, when given, is the number of
        directions in the SeFa file (the index must be below it); `checkpoint_sha256` and `generator` (the
        generator's `generator_digest`, recorded when given) identify the checkpoint reviewed on. Raises ReviewError when the entry or the
        resulting file is invalid (the validator's message) or the name exists and replace is False, and
        InvalidTransformationsFile when the file on disk is already invalid; the file is then unchanged."""
        name, description = str(name).strip(), str(description).strip()
        if not description:
            raise ReviewError("describe what the direction changes (the description is empty)")
        _check_direction(direction, direction_count)
        with self._changing() as document:
            entries = document.get("transformations")
            if not entries:  # missing, null or `[]` (flow style): a block list, like the hand-written file
                entries = document["transformations"] = CommentedSeq()
            existing = next((e for e in entries if str(e.get("name")) == name), None)
            if existing is not None and not replace:
                raise ReviewError(f"a transformation named {name!r} exists already ({existing.get('gan')} "
                                  f"{existing.get('layer_range')} #{existing.get('direction')}); choose another name "
                                  "or replace it")
            low, high = (float(m) for m in magnitude)
            span = CommentedSeq([low, high])
            span.fa.set_flow_style()
            review = CommentedMap([("reviewed_by", reviewed_by), ("reviewed_on", SingleQuotedScalarString(now_iso())),
                                   *([("generator", generator)] if generator else []),
                                   ("checkpoint_sha256", checkpoint_sha256)])
            values = [("name", name), ("description", description), ("gan", gan), ("layer_range", layer_range),
                      ("direction", int(direction)), ("magnitude", span), (REVIEW_KEY, review)]
            if existing is None:
                existing = CommentedMap(values)
                entries.append(existing)
            else:
                for key, value in values:
                    existing[key] = value
            rejected = document.get("rejected")
            if rejected:
                for record in [r for r in rejected if _same_direction(r, gan, layer_range, direction)]:
                    rejected.remove(record)
        return _plain(existing)

    def reject(self, *, gan: str, layer_range: str, direction: int, reason: str, checkpoint_sha256: str,
               reviewed_by: str, direction_count: int | None = None, generator: str | None = None) -> dict:
        """Record a rejected direction with its reason (replacing an earlier record of the same direction).

        Returns the record (plain dict). Raises ReviewError when the reason is empty, the direction is a
        named transformation (remove that entry by hand first) or the resulting file is invalid (a file
        needs at least one transformation), and InvalidTransformationsFile when the file is invalid."""
        reason = str(reason).strip()
        if not reason:
            raise ReviewError("give the reason for rejecting the direction (the reason is empty)")
        _check_direction(direction, direction_count)
        with self._changing() as document:
            users = [str(e["name"]) for e in document.get("transformations") or []
                     if _same_direction(e, gan, layer_range, direction)]
            if users:
                raise ReviewError(f"direction {gan} {layer_range} #{direction} is used by {', '.join(users)}; remove "
                                  f"that entry from {self.path} before rejecting the direction")
            rejected = document.get("rejected")
            if not rejected:
                rejected = document["rejected"] = CommentedSeq()
            for old in [r for r in rejected if _same_direction(r, gan, layer_range, direction)]:
                rejected.remove(old)
            record = CommentedMap([("gan", gan), ("layer_range", layer_range), ("direction", int(direction)),
                                   ("reason", reason), ("reviewed_by", reviewed_by),
                                   ("reviewed_on", SingleQuotedScalarString(now_iso())),
                                   *([("generator", generator)] if generator else []),
                                   ("checkpoint_sha256", checkpoint_sha256)])
            rejected.append(record)
        return _plain(record)

    @contextlib.contextmanager
    def _changing(self):
        """The document, re-read under the file's exclusive lock; validated and written back atomically when
        the block ends without an error (nothing is written otherwise). The lock is held across the whole
        read-modify-write cycle, so concurrent changes are serialised, none lost.

        Raises BusyError when another change holds the lock for more than LOCK_TIMEOUT seconds, OutputError
        when the folder cannot be written (read-only, full disk), and what _document and _write raise."""
        with exclusive(self.path, "review", wait=True, timeout=LOCK_TIMEOUT):
            document = self._document()
            yield document
            self._write(document)

    def _write(self, document) -> None:
        buffer = io.StringIO()
        _yaml().dump(document, buffer)
        text = buffer.getvalue()
        if not (document.get("transformations") or []):
            raise ReviewError(f"{self.path} would hold no transformation, and the workflow needs at least one: "
                              "accept a direction first")
        try:
            validate_text(text, self.path, self.gans)
        except ConfigError as exc:
            raise ReviewError(f"not saved: {exc}") from None
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        with atomic_path(self.path) as tmp:
            with open(tmp, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, mode)


def _same_direction(entry, gan: str, layer_range: str, direction: int) -> bool:
    return entry.get("gan") == gan and entry.get("layer_range") == layer_range \
        and entry.get("direction") == int(direction)


def _check_direction(direction, count: int | None) -> None:
    if not isinstance(direction, int) or isinstance(direction, bool) or direction < 0:
        raise ReviewError(f"direction must be an eigenvector index ≥ 0, not {direction!r}")
    if count is not None and direction >= count:
        raise ReviewError(f"direction {direction} does not exist (the SeFa file has {count})")

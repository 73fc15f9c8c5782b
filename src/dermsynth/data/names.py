"""File names as operating systems and archive tools really write them.

The same file name reaches us in several spellings: macOS writes decomposed Unicode (NFD: `e` +
combining accent) where a CSV typed on Windows holds the composed form (NFC); zip tools on Windows
store `\\` as the separator inside archives; spreadsheets keep `./img/a.jpg` or `img//a.jpg`; and
extensions come in either letter case (`ISIC_0001.JPG` listed as `ISIC_0001.jpg`). Matching is done
on one canonical spelling (`canonical_name`), while files are always read by their exact stored name.

Where two files share a canonical lookup key, `describe_difference` says exactly how their names
differ, so that a rejection can tell the user which two files collide and why.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath

# Extensions that name the same format: a CSV listing `a.jpeg` means the file `a.jpg` only if
# nothing else matches (see `same_format`).
_ALIASES = {".jpeg": ".jpg", ".jpe": ".jpg", ".jfif": ".jpg", ".tiff": ".tif"}


def canonical_name(name: str) -> str:
    """A member or listed path in canonical spelling: `/` separators, Unicode NFC, no `./`, no `//`,
    no surrounding whitespace. Letter case is kept (Linux file systems and zips are case-sensitive)."""
    text = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return ("/" if text.startswith("/") else "") + "/".join(parts)


def lookup_key(key: str) -> str:
    """The case-insensitive form used to find candidate files for an id or a path."""
    return canonical_name(key).casefold()


def suffix(name: str) -> str:
    """The lower-case extension of a name in canonical spelling ('' when there is none)."""
    return PurePosixPath(canonical_name(name)).suffix.lower()


def same_format(a: str, b: str) -> bool:
    """True when two extensions name the same format (`.JPG` and `.jpeg`, `.tif` and `.TIFF`)."""
    return _ALIASES.get(suffix(a), suffix(a)) == _ALIASES.get(suffix(b), suffix(b))


def describe_difference(a: str, b: str) -> str:
    """How two names differ, in words: 'the extension (.png vs .jpg)', 'the folder (x/ vs y/)',
    'letter case', 'Unicode normalisation (composed vs decomposed accents)', or 'nothing (identical
    names)'. Used in rejection messages for ambiguous matches."""
    if a == b:
        return "nothing (identical names)"
    ca, cb = canonical_name(a), canonical_name(b)
    if ca == cb:
        if a.replace("\\", "/") == b.replace("\\", "/"):
            return "only the path separator ('\\' vs '/')"
        if unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b):
            return "only Unicode normalisation (composed vs decomposed accents, as macOS writes them)"
        return "only the spelling of the path (separators, './', Unicode normalisation or surrounding spaces)"
    pa, pb = PurePosixPath(ca), PurePosixPath(cb)
    what = []
    if pa.parent != pb.parent:
        what.append(f"the folder ({pa.parent}/ vs {pb.parent}/)")
    if pa.stem != pb.stem:
        what.append("letter case of the name" if pa.stem.casefold() == pb.stem.casefold()
                    else f"the name ({pa.stem} vs {pb.stem})")
    if pa.suffix != pb.suffix:
        what.append(f"letter case of the extension ({pa.suffix} vs {pb.suffix})"
                    if pa.suffix.lower() == pb.suffix.lower() else f"the extension ({pa.suffix or 'none'} vs "
                    f"{pb.suffix or 'none'})")
    return " and ".join(what)


def printable(text: str) -> str:
    """Text safe to write as UTF-8: a file name holding bytes that are not UTF-8 (read from disk with
    Python's surrogate escapes) shows them as `\\xe9` instead of breaking the CSV writer."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def meant_on_disk(name: str) -> str:
    """The name a file on disk was meant to have when its bytes are not UTF-8 (a zip made on Windows
    and extracted on Linux leaves Windows-1252 bytes): decoded as Windows-1252, else Latin-1."""
    raw = name.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
        return name
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")

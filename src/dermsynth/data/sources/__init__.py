"""Readers for every supported archive layout, by the `type` used in the config."""

from __future__ import annotations

from pathlib import Path

from .base import SourceCatalog
from .derm7pt import Derm7ptReader
from .fitzpatrick17k import Fitzpatrick17kReader
from .folder import FolderReader
from .ham10000 import Ham10000Reader
from .isic2018 import Isic2018Task3Reader
from .isic2019 import Isic2019Reader
from .isic2020 import Isic2020Reader

READERS = {reader.type_name: reader for reader in (
    Ham10000Reader, Isic2018Task3Reader, Isic2020Reader, Isic2019Reader, Fitzpatrick17kReader,
    Derm7ptReader, FolderReader)}


def make_reader(name: str, spec: dict):
    return READERS[spec["type"]](name, spec)


def required_files(name: str, spec: dict) -> list[Path]:
    """The files a source needs: the inputs Snakemake tracks for its ingest job."""
    return make_reader(name, spec).required_files()


__all__ = ["READERS", "SourceCatalog", "make_reader", "required_files"]

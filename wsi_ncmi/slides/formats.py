"""Which slide format a path holds, and the slides a folder holds: one file per slide, or one folder per DICOM series.

Formats: the TIFF family OpenSlide and tiffslide read (SVS, generic TIFF, NDPI, MRXS, ...), OME-TIFF
(`.ome.tif`/`.ome.tiff`), DICOM WSI (a folder of `.dcm` instances of one series, or any one of them) and Zeiss
CZI (`.czi`). Only names are looked at here: nothing is opened, so listing a folder needs no optional package.
"""

from __future__ import annotations

from pathlib import Path

from wsi_ncmi.core.errors import WsiNcmiError

TIFF_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
OME_SUFFIXES = (".ome.tif", ".ome.tiff")
CZI_EXTENSION = ".czi"
DICOM_EXTENSION = ".dcm"
FORMATS = ("tiff", "ome-tiff", "dicom", "czi")


class MissingExtraError(WsiNcmiError, ImportError):
    """A format's reader needs an optional package that is not installed; the message names the pip extra."""


def missing_extra(extra: str, what: str, exc: ImportError) -> MissingExtraError:
    """The one-line error for a missing optional package: what needs it and the pip command that adds it."""
    return MissingExtraError(f"{what} needs the '{extra}' extra: pip install 'wsi-ncmi[{extra}]' ({exc})")


def dicom_files(folder: Path) -> list[Path]:
    """The `.dcm` files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == DICOM_EXTENSION)


def slide_format(path: Path | str) -> str:
    """The format a slide path names: 'dicom' (a folder of `.dcm` files, or one `.dcm`), 'czi', 'ome-tiff', or
    'tiff' (everything OpenSlide and tiffslide read)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_EXTENSION):
        return "dicom"
    if name.endswith(CZI_EXTENSION):
        return "czi"
    if name.endswith(OME_SUFFIXES):
        return "ome-tiff"
    return "tiff"


def slide_id_for(path: Path) -> str:
    """A slide's id from its path: the folder name of a DICOM series, the file name without its (OME) suffix."""
    if path.is_dir():
        return path.name
    name = path.name
    for suffix in OME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_slide_file(path: Path) -> bool:
    """Whether a file in a --slides folder is a slide of its own (`.dcm` files belong to their folder's series)."""
    suffix = path.suffix.lower()
    return suffix in TIFF_EXTENSIONS or suffix == CZI_EXTENSION


def find_slides(folder: Path | str) -> list[tuple[str, Path]]:
    """(slide_id, path) of every slide directly in `folder`, sorted by path: slide files, each sub-folder holding
    `.dcm` files (one DICOM series; slide_id = the sub-folder's name), and the folder itself when `.dcm` files lie
    loose in it."""
    folder = Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and is_slide_file(entry):
            found.append((slide_id_for(entry), entry))
        elif entry.is_dir() and dicom_files(entry):
            found.append((entry.name, entry))
    if dicom_files(folder):
        found.append((folder.resolve().name, folder))
    return found

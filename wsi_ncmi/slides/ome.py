"""OME-TIFF: the pyramid reads through tiffslide (OpenSlide sees only its first level); the pixel size and the
objective come from the OME-XML in the first image description, which neither slide library reads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

PIXEL_ATTRIBUTES = ("PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit")


def _local(tag: str) -> str:
    """An element's name without its XML namespace (OME schemas change namespace between versions)."""
    return tag.rsplit("}", 1)[-1]


def ome_properties(xml: str | None) -> dict[str, str]:
    """`ome.PhysicalSizeX`, `ome.PhysicalSizeXUnit` (and Y) of the first image's Pixels, and
    `ome.NominalMagnification` of its objective, as strings; {} when the XML is absent or unreadable."""
    if not xml:
        return {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    image = next((e for e in root if _local(e.tag) == "Image"), None)
    if image is None:
        return {}
    properties = {}
    pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
    if pixels is not None:
        properties = {f"ome.{key}": pixels.attrib[key] for key in PIXEL_ATTRIBUTES if key in pixels.attrib}
    settings = next((e for e in image if _local(e.tag) == "ObjectiveSettings"), None)
    wanted = None if settings is None else settings.attrib.get("ID")
    for element in root.iter():
        chosen = wanted is None or element.attrib.get("ID") == wanted
        if _local(element.tag) == "Objective" and chosen and "NominalMagnification" in element.attrib:
            properties["ome.NominalMagnification"] = element.attrib["NominalMagnification"]
            break
    return properties


def tiff_ome_properties(tiff: Any) -> dict[str, str]:
    """The OME properties of an open tifffile.TiffFile ({} when it is not an OME-TIFF)."""
    try:
        return ome_properties(tiff.ome_metadata) if tiff.is_ome else {}
    except Exception:
        return {}

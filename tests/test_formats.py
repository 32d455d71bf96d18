"""DICOM WSI, OME-TIFF and CZI: one synthetic slide written again in each format by the format's own writer
(pydicom for DICOM, tifffile's OME writer, pylibCZIrw), then read, tiled and embedded as the TIFF it came from.

The DICOM instances and the OME-TIFF carry the TIFF's own JPEG tiles, so every level has the TIFF's pixels; the
CZI holds the decoded level 0 (pylibCZIrw writes pixels, not JPEG tiles, and no pyramid), so its level 0 has the
TIFF's pixels and its lower levels are libCZI's reductions of it.
"""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.cohort.manifest import list_slides
from wsi_ncmi.embedding.embed import EmbedSettings, bag_path, embed_slides
from wsi_ncmi.formats.bags import read_bag, read_bag_attrs, read_coords
from wsi_ncmi.slides import backend
from wsi_ncmi.slides.backend import SlideError, open_slide
from wsi_ncmi.slides.direct import SWITCH, dicom_reader, direct_reader, read_direct, reader_for
from wsi_ncmi.slides.formats import find_slides
from wsi_ncmi.slides.mpp import metadata_mpp, resolve_mpp
from wsi_ncmi.slides.ome import ome_properties
from wsi_ncmi.synthetic import SlideSpec, write_slide
from wsi_ncmi.tiling.tile import TileTask, TilingParams, tile_slide, tile_slides

runner = CliRunner()
MPP = 0.25
SOURCES = {
    "alpha": SlideSpec("alpha", 2048, 1536, MPP, seed=31, tissue_fraction=0.5),
    "beta": SlideSpec("beta", 2048, 1536, MPP, seed=32, tissue_fraction=0.5),
}
SOURCES_OF_FORMAT = {"dicom": "{}_dicom", "ome-tiff": "{}_ome.ome.tif", "czi": "{}_czi.czi"}
ENCODER = "timm:test_convnext"
"""A small encoder, randomly initialised (seeded): the features only need to be a deterministic function of pixels."""
MPP_SOURCE = {"dicom": "DICOM PixelSpacing", "ome-tiff": "OME PhysicalSizeX", "czi": "CZI Scaling"}
BACKEND = {"dicom": "openslide", "ome-tiff": "tiffslide", "czi": "pylibczirw"}


def _jpeg_tiles(tiff: tifffile.TiffFile, page: tifffile.TiffPage) -> list[bytes]:
    handle = tiff.filehandle
    tiles = []
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        handle.seek(offset)
        tiles.append(handle.read(count))
    return tiles


LABEL = np.full((160, 320, 3), 250, dtype=np.uint8)
LABEL[40:120, 20:300:8] = 20
"""A label photograph: black bars (a barcode) on white."""


def _dicom_instance(
    uids: tuple[str, str, str], number: int, image_type: list[str], size: tuple[int, int], tile: tuple[int, int]
) -> Any:
    """The attributes every instance of the series shares, for an image of `size` (w, h) in `tile` (w, h) frames."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality, ds.PatientName, ds.PatientID = "SM", "synthetic", "synthetic"
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "000000"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImageType = image_type
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.Columns, ds.Rows = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = size
    ds.TotalPixelMatrixFocalPlanes = ds.NumberOfOpticalPaths = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    optical_path = Dataset()
    optical_path.OpticalPathIdentifier = "0"
    ds.OpticalPathSequence = Sequence([optical_path])
    return ds


def _save_frames(ds: Any, frames: list[bytes], path: Path) -> None:
    from pydicom.encaps import encapsulate

    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def write_dicom(source: Path, folder: Path, mpp: float | None = MPP) -> Path:
    """A DICOM WSI series written with pydicom: one VL Whole Slide Microscopy instance per level (TILED_FULL, baseline
    JPEG frames that are the TIFF's own tiles) and a label instance; `mpp=None` leaves PixelSpacing out."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uids = (generate_uid(), generate_uid(), generate_uid())
    with tifffile.TiffFile(source) as tiff:
        levels = tiff.series[0].levels
        for index, level in enumerate(levels):
            page = level.pages[0]
            height, width = level.shape[:2]
            kind = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"] if index else ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
            ds = _dicom_instance(uids, index + 1, kind, (width, height), (page.tilewidth, page.tilelength))
            if mpp is not None:
                spacing = mpp * levels[0].shape[1] / width / 1000
                measures = Dataset()
                measures.PixelSpacing = [spacing, spacing]
                measures.SliceThickness = 0.001
                shared = Dataset()
                shared.PixelMeasuresSequence = Sequence([measures])
                ds.SharedFunctionalGroupsSequence = Sequence([shared])
                ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = width * spacing, height * spacing
                ds.ImagedVolumeDepth = 0.001
            _save_frames(ds, _jpeg_tiles(tiff, page), folder / f"level{index}.dcm")
    label = io.BytesIO()
    Image.fromarray(LABEL).save(label, "JPEG", quality=95)
    ds = _dicom_instance(uids, len(levels) + 1, ["ORIGINAL", "PRIMARY", "LABEL", "NONE"], (320, 160), (320, 160))
    _save_frames(ds, [label.getvalue()], folder / "label.dcm")
    return folder


def write_ome(source: Path, path: Path, size_nm: float | None = MPP * 1000) -> Path:
    """An OME-TIFF pyramid (sub-IFDs) of the TIFF's own JPEG tiles, written with tifffile's OME writer; the pixel
    size goes into the OME-XML in nanometres (`size_nm=None` leaves it out)."""
    size = {} if size_nm is None else {"PhysicalSizeX": size_nm, "PhysicalSizeXUnit": "nm"}
    size |= {} if size_nm is None else {"PhysicalSizeY": size_nm, "PhysicalSizeYUnit": "nm"}
    with tifffile.TiffFile(source) as tiff, tifffile.TiffWriter(path, ome=True) as writer:
        levels = tiff.series[0].levels
        for index, level in enumerate(levels):
            first = {"subifds": len(levels) - 1, "metadata": {"axes": "YXS", **size}}
            writer.write(
                iter(_jpeg_tiles(tiff, level.pages[0])),
                shape=level.shape,
                dtype=np.uint8,
                tile=(level.pages[0].tilelength, level.pages[0].tilewidth),
                photometric="ycbcr",
                compression="jpeg",
                subsampling=(2, 2),
                **(first if index == 0 else {"subfiletype": 1, "metadata": None}),
            )
    return path


def write_czi(source: Path, path: Path, mpp: float | None = MPP, origin: tuple[int, int] = (1000, 400)) -> Path:
    """A CZI mosaic of the TIFF's decoded level 0 in 1024-px sub-blocks (BGR, as CZI stores colour) placed at
    `origin`, written with pylibCZIrw; the scaling metadata in metres, as the CZI format defines it."""
    from pylibCZIrw import czi as pyczi

    image = tifffile.imread(source)
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for y in range(0, image.shape[0], 1024):
            for x in range(0, image.shape[1], 1024):
                block = np.ascontiguousarray(image[y : y + 1024, x : x + 1024, ::-1])
                czi.write(block, location=(origin[0] + x, origin[1] + y))
        scale = {} if mpp is None else {"scale_x": mpp * 1e-6, "scale_y": mpp * 1e-6}
        czi.write_metadata(document_name=path.stem, **scale)
    return path


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder of slides: each source as the TIFF and as a DICOM folder, an OME-TIFF and a CZI."""
    pytest.importorskip("pydicom")
    pytest.importorskip("pylibCZIrw")
    folder = tmp_path_factory.mktemp("formats")
    paths = {}
    for name, spec in SOURCES.items():
        tif = write_slide(spec, folder / f"{name}.tif")
        paths[f"{name}:tiff"] = tif
        paths[f"{name}:dicom"] = write_dicom(tif, folder / f"{name}_dicom")
        paths[f"{name}:ome-tiff"] = write_ome(tif, folder / f"{name}_ome.ome.tif")
        paths[f"{name}:czi"] = write_czi(tif, folder / f"{name}_czi.czi")
    return paths


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    direct_reader.cache_clear()
    dicom_reader.cache_clear()


def test_a_slides_folder_lists_every_format(formats: dict[str, Path]) -> None:
    folder = formats["alpha:tiff"].parent
    (folder / "notes").mkdir(exist_ok=True)
    table = list_slides(folder)
    expected = sorted(
        [name for name in SOURCES]
        + [f"{name}_dicom" for name in SOURCES]
        + [f"{name}_ome" for name in SOURCES]
        + [f"{name}_czi" for name in SOURCES]
    )
    assert sorted(table["slide_id"]) == expected
    paths = dict(zip(table["slide_id"], table["path"], strict=True))
    assert Path(paths["alpha_dicom"]).is_dir(), "a DICOM slide is its series folder"
    assert not any(p.endswith(".dcm") for p in table["path"])
    assert find_slides(formats["alpha:dicom"]) == [("alpha_dicom", formats["alpha:dicom"])], (
        "a --slides folder of loose .dcm files is one slide named after the folder"
    )


@pytest.mark.parametrize("fmt", ["dicom", "ome-tiff", "czi"])
def test_each_format_reads_the_source_pixels_with_its_own_mpp(formats: dict[str, Path], fmt: str) -> None:
    with open_slide(formats["alpha:tiff"]) as tiff, open_slide(formats[f"alpha:{fmt}"]) as slide:
        assert (slide.format, slide.backend) == (fmt, BACKEND[fmt])
        assert slide.dimensions == tiff.dimensions == (2048, 1536)
        mpp = resolve_mpp(slide.properties)
        assert mpp.value == pytest.approx(MPP) and mpp.source == MPP_SOURCE[fmt]
        regions = [((300, 200), (500, 400)), ((1900, 1400), (300, 300)), ((-50, -30), (200, 100))]
        for location, size in regions:
            assert np.array_equal(slide.read_region(location, 0, size), tiff.read_region(location, 0, size)), location
        if fmt != "czi":
            assert slide.level_dimensions == tiff.level_dimensions
            for level in range(1, tiff.level_count):
                size = tiff.level_dimensions[level]
                whole = tiff.read_region((0, 0), level, size)
                assert np.array_equal(slide.read_region((0, 0), level, size), whole)
                assert np.array_equal(slide.read_level(level), whole), "whole levels decode straight from the tiles"
        else:
            assert slide.level_dimensions[:2] == [(2048, 1536), (1024, 768)] and slide.level_downsamples[1] == 2.0
            assert slide.read_level(1) is None
            half = slide.read_region((0, 0), 1, (1024, 768))
            full = tiff.read_region((0, 0), 0, (2048, 1536)).astype(np.float64)
            box = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2]) / 4
            assert np.abs(half.astype(np.float64) - box).max() <= 0.5, "no stored pyramid: level 0 box-averaged"


def test_any_instance_names_a_dicom_slide_and_wsidicom_reads_it_too(
    formats: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wsidicom")
    folder = formats["alpha:dicom"]
    with open_slide(folder / "level1.dcm") as one, open_slide(formats["alpha:tiff"]) as tiff:
        assert one.level_dimensions == tiff.level_dimensions
        expected = tiff.read_region((700, 500), 1, (300, 200))
        assert np.array_equal(one.read_region((700, 500), 1, (300, 200)), expected)

    def refuse(path: Path, fmt: str) -> None:
        raise OSError("unsupported")

    monkeypatch.setitem(backend.OPENERS, "openslide", refuse)
    with open_slide(folder) as fallback:
        assert fallback.backend == "wsidicom"
        assert resolve_mpp(fallback.properties).source == "DICOM PixelSpacing"
        assert np.array_equal(fallback.read_region((700, 500), 1, (300, 200)), expected)
        assert np.abs(fallback.associated_images()["label"].astype(int) - LABEL).max() < 40
        beyond = fallback.read_region((1900, 1400), 0, (300, 300))
        assert (beyond[136:] == 255).all() and (beyond[:, 148:] == 255).all()


@pytest.mark.parametrize(("fmt", "module", "extra"), [("czi", "pylibCZIrw", "czi"), ("dicom", "wsidicom", "dicom")])
def test_a_missing_extra_is_one_line_naming_it(
    formats: dict[str, Path], monkeypatch: pytest.MonkeyPatch, fmt: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    if fmt == "dicom":
        monkeypatch.setitem(backend.OPENERS, "openslide", lambda path, fmt: (_ for _ in ()).throw(OSError("no")))
    with pytest.raises(SlideError) as caught:
        open_slide(formats[f"alpha:{fmt}"])
    message = str(caught.value)
    assert "\n" not in message and f"pip install 'wsi-ncmi[{extra}]'" in message


@pytest.mark.parametrize("fmt", ["dicom", "ome-tiff"])
def test_jpeg_tiles_are_read_directly_and_streamed_for_the_device(
    formats: dict[str, Path], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_slide(formats["alpha:tiff"]) as tiff, open_slide(formats[f"alpha:{fmt}"]) as slide:
        for level in range(slide.level_count):
            reader = reader_for(slide, level, 256)
            assert reader is not None, level
            width, height = slide.level_dimensions[level]
            scale = int(slide.level_downsamples[level])
            for x, y in [(0, 0), (256, 512), (width - width % 256, height - height % 256)]:
                location = (x * scale, y * scale)
                direct = read_direct(slide, location, level, 256)
                assert np.array_equal(direct, tiff.read_region(location, level, (256, 256))), (level, x, y)
        reader = reader_for(slide, 0, 256)
        assert reader.streamable(256, 256) and reader.stream(256, 256)[:2] == b"\xff\xd8"
        assert reader_for(slide, 0, 384) is None
    monkeypatch.setenv(SWITCH, "0")
    direct_reader.cache_clear()
    dicom_reader.cache_clear()
    with open_slide(formats[f"alpha:{fmt}"]) as slide:
        assert reader_for(slide, 0, 256) is None


def test_without_pydicom_a_dicom_slide_reads_through_openslide(
    formats: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with open_slide(formats["alpha:dicom"]) as slide, open_slide(formats["alpha:tiff"]) as tiff:
        assert slide.backend == "openslide"
        assert reader_for(slide, 0, 256) is None and slide.read_level(1) is None
        assert np.array_equal(slide.read_region((256, 256), 0, (256, 256)), tiff.read_region((256, 256), 0, (256, 256)))


def test_tile_slides_folder_tiles_every_format(formats: dict[str, Path], tmp_path: Path) -> None:
    folder = formats["alpha:tiff"].parent
    args = ["tile", "--slides", str(folder), "--out", str(tmp_path / "job"), "--mpp", "2", "--tile-size", "64"]
    result = runner.invoke(app, [*args, "--no-thumbnails", "--qc", "off"])
    assert result.exit_code == 0, result.output
    status = pd.read_csv(tmp_path / "job" / "status" / "tile.csv", dtype=str).set_index("slide_id")
    assert status.loc["beta_dicom", "mpp_source"] == "DICOM PixelSpacing"
    assert status.loc["beta_ome", "mpp_source"] == "OME PhysicalSizeX"
    assert status.loc["beta_czi", "mpp_source"] == "CZI Scaling"
    assert status.loc["beta", "mpp_source"] == "metadata"
    assert (status["status"] == "ok").all()
    tiles = status["n_tiles"].astype(int)
    for name in SOURCES:
        assert tiles[f"{name}_dicom"] == tiles[f"{name}_ome"] == tiles[name] > 0
        assert abs(tiles[f"{name}_czi"] - tiles[name]) <= 0.1 * tiles[name]


def test_a_czi_has_no_direct_reader_and_reads_through_pylibczirw(formats: dict[str, Path]) -> None:
    with open_slide(formats["alpha:czi"]) as slide:
        assert reader_for(slide, 0, 256) is None
        assert read_direct(slide, (0, 0), 0, 256) is None


@pytest.mark.parametrize("fmt", ["dicom", "ome-tiff", "czi"])
def test_device_decoding_serves_jpeg_formats_and_steps_aside_for_czi(
    formats: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    """0.5 um/px, 256 px: every read is one 256-px JPEG tile of level 1, which the device path decodes (here on the
    CPU, with torchvision's libjpeg: the same pixels); a CZI has no JPEG tiles and decodes the CPU way."""
    table = pd.DataFrame({"slide_id": ["s"], "path": [str(formats[f"alpha:{fmt}"])], "mpp": [np.nan]})
    job = tmp_path / "job"
    rows = tile_slides(table, job, TilingParams(mpp=0.5, tile_size=256), progress=False)
    assert rows[0].status == "ok" and rows[0].n_tiles > 0, rows
    cpu = EmbedSettings(encoder=ENCODER, weights="random", batch_size=8, workers=0, device="cpu", decode="cpu")
    expected = embed_slides([("s", None)], job, cpu, progress=False)[0]
    assert expected.status == "ok", expected
    reference = read_bag(bag_path(job, ENCODER, "s")).features
    device = replace(cpu, decode="device", overwrite=True)
    row = embed_slides([("s", None)], job, device, progress=False)[0]
    assert row.status == "ok", row
    attrs = read_bag_attrs(bag_path(job, ENCODER, "s"))
    assert attrs["decode"] == ("cpu" if fmt == "czi" else "device")
    assert np.array_equal(read_bag(bag_path(job, ENCODER, "s")).features, reference)


@pytest.mark.parametrize("fmt", ["ome-tiff", "czi", "czi-micrometres"])
def test_a_slide_without_mpp_fails_alone(formats: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    source = formats["alpha:tiff"]
    if fmt == "ome-tiff":
        path = write_ome(source, tmp_path / "bare.ome.tif", size_nm=None)
    elif fmt == "czi":
        path = write_czi(source, tmp_path / "bare.czi", mpp=None)
    else:
        path = write_czi(source, tmp_path / "micrometres.czi", mpp=MPP * 1e6)
    (tmp_path / "job").mkdir()
    row = tile_slide(TileTask("bare", str(path), str(tmp_path / "job"), TilingParams(mpp=2.0, tile_size=64)))
    assert row.status == "failed" and "no microns-per-pixel" in row.error
    if fmt == "czi-micrometres":
        assert "CZI Scaling gives 250000 um/px" in row.error


OME_UNITS = {"nm": 1e-3, "\u00b5m": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "\u00c5": 1e-4}


@settings(deadline=None)
@given(
    mpp=st.floats(min_value=0.06, max_value=19.0),
    unit=st.sampled_from(sorted(OME_UNITS)),
    namespace=st.sampled_from(["2016-06", "2015-01"]),
)
def test_ome_pixel_size_is_converted_from_its_unit(mpp: float, unit: str, namespace: str) -> None:
    value = mpp / OME_UNITS[unit]
    xml = (
        f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/{namespace}"><Image ID="Image:0">'
        f'<Pixels PhysicalSizeX="{value!r}" PhysicalSizeXUnit="{unit}" PhysicalSizeY="{value!r}" '
        f'PhysicalSizeYUnit="{unit}"/></Image></OME>'
    )
    found = metadata_mpp(ome_properties(xml))
    assert found is not None and found[0] == pytest.approx(mpp, rel=1e-9) and found[1] == "OME PhysicalSizeX"


def test_ome_default_unit_is_micrometres_and_odd_xml_gives_nothing() -> None:
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image><Pixels PhysicalSizeX="0.5"/></Image>'
        "</OME>"
    )
    assert metadata_mpp(ome_properties(xml))[:2] == (0.5, "OME PhysicalSizeX")
    assert ome_properties("<OME") == {} and ome_properties(None) == {} and ome_properties("<OME/>") == {}


def _manifest(formats: dict[str, Path], path: Path) -> Path:
    """Every slide of the folder found by `--slides`-style discovery, labelled by its source; the CZIs are the
    test centre."""
    table = list_slides(formats["alpha:tiff"].parent)
    table["label"] = ["positive" if s.startswith("beta") else "negative" for s in table["slide_id"]]
    table["center"] = ["1" if s.endswith("_czi") else "0" for s in table["slide_id"]]
    table[["slide_id", "label", "center", "path"]].to_csv(path, index=False)
    return path


def test_one_run_tiles_and_embeds_every_format_like_its_tiff(formats: dict[str, Path], tmp_path: Path) -> None:
    manifest = _manifest(formats, tmp_path / "manifest.csv")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"manifest: {manifest}\njob: job\nruns: runs\n"
        "tiling: {mpp: 0.25, tile_size: 256}\n"
        f"embedding: {{encoder: '{ENCODER}', weights: random, batch_size: 16, workers: 0, device: cpu, seed: 0}}\n"
        "splits: {scheme: holdout-center, test_centers: ['1'], val_frac: 0.34, seed: 1}\n"
        "training: {model: abmil, model_args: {dim: 32}, epochs: 1, warmup_epochs: 0, device: cpu}\n"
        "losses: [ce]\nseeds: [1]\nevaluate: {split: test, bootstrap: 10}\n"
    )
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    job = tmp_path / "job"
    status = pd.read_csv(job / "status" / "tile.csv", dtype=str).set_index("slide_id")
    assert (status["status"] == "ok").all(), status
    qc_rows = pd.read_csv(job / "status" / "qc.csv", dtype=str).set_index("slide_id")
    for name in SOURCES:
        reference = read_coords(job / "tiles" / f"{name}.h5")
        features = read_bag(bag_path(job, ENCODER, name))
        for fmt, pattern in SOURCES_OF_FORMAT.items():
            slide_id = pattern.format(name).removesuffix(".ome.tif").removesuffix(".czi")
            assert status.loc[slide_id, "mpp_source"] == MPP_SOURCE[fmt]
            coords = read_coords(job / "tiles" / f"{slide_id}.h5")
            bag = read_bag(bag_path(job, ENCODER, slide_id))
            assert (job / "thumbnails" / f"{slide_id}.jpg").exists()
            assert (job / "thumbnails" / f"{slide_id}.label.png").exists() == (fmt == "dicom"), slide_id
            if fmt == "czi":
                # The tissue grid is the TIFF's; the blur check scores focus on a different reduction (box-averaged
                # RGB here, the TIFF's JPEG-compressed level there), so its drops may differ: README, Slide formats.
                shared = {tuple(c) for c in coords.coords} & {tuple(c) for c in reference.coords}
                assert len(shared) >= 0.9 * len(reference.coords), slide_id
                assert qc_rows.loc[slide_id, "tiles_before_qc"] == qc_rows.loc[name, "tiles_before_qc"], slide_id
                mine = {tuple(c): f for c, f in zip(coords.coords, bag.features, strict=True)}
                theirs = {tuple(c): f for c, f in zip(reference.coords, features.features, strict=True)}
                close = [np.allclose(mine[c], theirs[c], rtol=1e-5, atol=1e-6) for c in shared]
                assert all(close), f"{slide_id}: batches differ from the TIFF's where the tile sets do"
            else:
                assert np.array_equal(coords.coords, reference.coords), slide_id
                assert np.array_equal(bag.features, features.features), slide_id
    predictions = pd.read_csv(tmp_path / "runs" / "abmil_ce_seed1_fold0" / "predictions_test.csv")
    assert sorted(predictions["slide_id"]) == ["alpha_czi", "beta_czi"]
    qc = pd.read_csv(job / "status" / "qc.csv", dtype=str)
    assert len(qc) == 8

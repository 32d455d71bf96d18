"""QC's settings: the `qc:` section of configs/tiling.yaml, checked, and fingerprinted for the coords files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from wsi_ncmi.tiling.qc.inks import DEFAULT_PEN_COLORS, PEN_COLORS
from wsi_ncmi.tiling.qc.registry import CHECKS

SHARED_THRESHOLDS = ("min_width_um", "margin_um", "max_artifact", "warn_removed")
"""Settings no one check owns (every removal mask's width and margin, the tiles' removal limit, the warning)
that the QC table shows beside the checks' own thresholds."""


@dataclass(frozen=True)
class QCParams:
    """Quality-control settings (configs/tiling.yaml, `qc:`); sizes in micrometres, colours in HSV.

    pen_colors: marker inks removed (blue, green, red hues; black = near-black not touching the slide's edge).
    pen_min_saturation: HSV saturation (0-1) an ink pixel needs. dark_max_value: HSV value (0-255) at or below
    which a pixel is near-black. min_width_um: ink and dark regions narrower than this are ignored (specks, JPEG).
    margin_um: removals grow by this much (blended stroke edges). max_artifact: a tile with more of its area in
    removals is dropped.
    blur: drop out-of-focus tiles. Each candidate tile is read at about `focus_mpp` um/px and scored by the RMS
    Laplacian of its tissue (grey levels); a tile is blurry when its score is below `min_sharpness` (an absolute
    floor: featureless), or when it lies more than `blur_mad` robust standard deviations (1.4826 MAD, on log
    scores) below the slide's median score and below `blur_ratio` times that median.
    warn_removed: a slide whose QC removed more than this share of its tissue or of its tiles gets a warning.
    folds: also remove tissue folds (off by default; validated on synthetic slides only). A fold is the same
    tissue twice, so its optical density (OD = log10(255 / I) per channel) is about twice the tissue's with the
    same mix of stains. Reference: the median colour of the tissue's lighter half. fold_min_density: a fold's OD
    summed over RGB is at least this multiple of the reference's (one fold doubles it at full resolution; less
    at the mask's, where nuclei and stroma are averaged). fold_max_angle: degrees between a fold's OD vector and
    the reference's at most this; denser tumour changes the stain mix (7-19 degrees on the synthetic cohort,
    depending on the stain) and is kept.
    """

    enabled: bool = True
    pen_colors: tuple[str, ...] = DEFAULT_PEN_COLORS
    pen_min_saturation: float = 0.4
    dark_max_value: int = 60
    min_width_um: float = 24.0
    margin_um: float = 16.0
    max_artifact: float = 0.25
    blur: bool = True
    focus_mpp: float = 2.0
    min_sharpness: float = 1.0
    blur_mad: float = 3.0
    blur_ratio: float = 0.35
    warn_removed: float = 0.25
    folds: bool = False
    fold_min_density: float = 1.6
    fold_max_angle: float = 7.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pen_colors", tuple(self.pen_colors))

    def problems(self) -> list[str]:
        """What is wrong with these settings, one message per setting (empty when valid)."""
        out = []
        unknown = sorted(set(self.pen_colors) - set(PEN_COLORS))
        if unknown:
            out.append(f"qc.pen_colors must be among {', '.join(PEN_COLORS)}, got {', '.join(unknown)}")
        if not 0.0 <= self.pen_min_saturation <= 1.0:
            out.append(f"qc.pen_min_saturation must be in [0, 1], got {self.pen_min_saturation}")
        if not (isinstance(self.dark_max_value, int) and 0 <= self.dark_max_value <= 255):
            out.append(f"qc.dark_max_value must be an integer 0-255, got {self.dark_max_value!r}")
        for key in ("min_width_um", "margin_um", "min_sharpness", "blur_mad"):
            if not getattr(self, key) >= 0:
                out.append(f"qc.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("max_artifact", "blur_ratio", "warn_removed"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                out.append(f"qc.{key} must be a fraction in [0, 1], got {getattr(self, key)}")
        if not 0.25 <= self.focus_mpp <= 4.0:
            out.append(f"qc.focus_mpp must be in [0.25, 4] um/px (focus shows at 1-2), got {self.focus_mpp}")
        for key in ("folds", "blur"):
            if not isinstance(getattr(self, key), bool):
                out.append(f"qc.{key} must be true or false, got {getattr(self, key)!r}")
        if not self.fold_min_density > 1.0:
            out.append(
                f"qc.fold_min_density must be more than 1 (folds are denser than tissue), got {self.fold_min_density}"
            )
        if not 0.0 < self.fold_max_angle < 90.0:
            out.append(f"qc.fold_max_angle must be in (0, 90) degrees, got {self.fold_max_angle}")
        return out

    def fingerprint(self) -> str:
        """The settings as one string for the coords attributes and the resume check; 'off' when disabled."""
        if not self.enabled:
            return "off"
        values = asdict(self)
        values["pen_colors"] = list(self.pen_colors)
        for check in CHECKS.values():
            if check.optional and not check.enabled(self):
                for key in (check.switch, *check.thresholds):
                    del values[key]
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_fingerprint(cls, text: str) -> QCParams:
        """The settings a coords file's `qc_params` attribute records (an optional check's settings left out mean it
        was off: fold settings, folds)."""
        return cls(enabled=False) if text == "off" else cls(**json.loads(text))

"""What decides what the network sees: the preprocessing settings saved next to every model.

:class:`PreprocessSettings` holds the HU window, input size, optional CLAHE, 2.5D context,
resampling, plane and field of view; :func:`settings_from_profile` fills it from a course
profile and :func:`tumour_settings` for a cascade's tumour stage. The steps that apply them are
in :mod:`liverseg_helpers.preparation.preprocess`, which re-exports these names.

This module does not import TensorFlow or Keras.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from liverseg_helpers.errors import DataError
from liverseg_helpers.preparation import views


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that decides what the network sees; saved next to every model.

    Attributes:
        window_level_hu: Centre of the HU window (liver: 50 HU).
        window_width_hu: Width of the HU window (liver: 400 HU, so -150..250 HU).
        image_size: Side of the square network input in pixels.
        clahe: Apply CLAHE after windowing (the paper did).
        clahe_clip_limit: CLAHE contrast limit (OpenCV's ``clipLimit``).
        clahe_tile_grid: CLAHE tiles per side (OpenCV's ``tileGridSize``).
        context_slices: Neighbouring slices on each side as extra channels (0 = 2D input).
        non_liver_fraction: Slices without liver kept for training, as a share of liver slices.
        target_spacing_mm: In-plane pixel size to resample to, or None to resize the whole
            slice to ``image_size`` whatever its spacing.
        view: Plane of the network's slices, ``"axial"``, ``"coronal"`` or ``"sagittal"``
            (:mod:`liverseg_helpers.preparation.views`); the last two need ``target_spacing_mm``.
        fov_range_mm: ``(smallest, largest)`` field of view in mm the network learnt from,
            or None. At prediction, an axial network without ``target_spacing_mm`` resamples
            a CT whose field of view lies outside it
            (``inference.ensemble_members.settings_for_field_of_view``).
        liver_reference_hu: If set, every CT is shifted before windowing so that the median HU
            of its liver lands here (``preprocess.shift_to_liver_reference``): the network sees
            HU relative to the patient's own liver, whatever the phase or scanner. None keeps
            absolute HU.
    """

    window_level_hu: float = 50.0
    window_width_hu: float = 400.0
    image_size: int = 256
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    context_slices: int = 0
    non_liver_fraction: float = 0.25
    target_spacing_mm: float | None = None
    view: str = "axial"
    fov_range_mm: tuple[float, float] | None = None
    liver_reference_hu: float | None = None

    def __post_init__(self) -> None:
        if self.window_width_hu <= 0:
            raise ValueError(f"window_width_hu must be > 0, got {self.window_width_hu}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {self.context_slices}")
        if self.non_liver_fraction < 0:
            raise ValueError(f"non_liver_fraction must be >= 0, got {self.non_liver_fraction}")
        if self.target_spacing_mm is not None and self.target_spacing_mm <= 0:
            raise ValueError(f"target_spacing_mm must be > 0, got {self.target_spacing_mm}")
        views.check_view(self.view, self.target_spacing_mm)
        if self.fov_range_mm is not None:
            low, high = self.fov_range_mm
            if not 0 < low <= high:
                raise ValueError(f"fov_range_mm must be 0 < smallest <= largest, got {low}, {high}")
            object.__setattr__(self, "fov_range_mm", (float(low), float(high)))

    @property
    def n_channels(self) -> int:
        """Input channels of the network: 1 + 2 * context_slices."""
        return 1 + 2 * self.context_slices

    def to_dict(self) -> dict:
        """Plain dict for JSON (run folders, model sidecars, cache keys).

        The axial view and an unset ``fov_range_mm`` or ``liver_reference_hu`` are left out,
        so the settings of every model and slice cache read and hash as they did before these
        settings existed.
        """
        values = asdict(self)
        if values["liver_reference_hu"] is None:
            del values["liver_reference_hu"]
        if values["view"] == "axial":
            del values["view"]
        if values["fov_range_mm"] is None:
            del values["fov_range_mm"]
        else:
            values["fov_range_mm"] = list(values["fov_range_mm"])
        return values

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessSettings:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: A key that is not a setting (e.g. a file from a newer version).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"preprocess settings: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def settings_from_profile(profile, **overrides) -> PreprocessSettings:
    """Settings that match a :class:`liverseg_helpers.config.Profile`.

    Args:
        profile: A ``Profile`` (uses image_size, context_slices, non_liver_fraction).
        **overrides: Any other setting, e.g. ``clahe=True``.
    """
    values = dict(
        image_size=profile.image_size,
        context_slices=profile.context_slices,
        non_liver_fraction=profile.non_liver_fraction,
    )
    values.update(overrides)
    return PreprocessSettings(**values)


#: Margin around the liver's bounding box for the tumour stage's crop, native pixels
#: (8 px: 5-6 mm on real CT, enough to keep a lesion on the liver's edge whole).
TUMOUR_CROP_MARGIN_PX = 8


def tumour_settings(profile, **overrides) -> PreprocessSettings:
    """Settings of a cascade's second stage, which looks for lesions inside the liver crop.

    The one place where the tumour task's preprocessing is chosen (training through
    ``train.TrainConfig(task="tumour")`` and the saved model's sidecar use it; prediction
    reads the sidecar). Compared with :func:`settings_from_profile`:

    * a tighter HU window, W 200 / L 70 (-30..170 HU): only liver tissue (about 60-130 HU in
      the portal-venous phase) and hypodense lesions (about 10-80 HU) matter now, so the
      same 8-bit-like range of the input spends its contrast on the difference between them;
    * every slice is cropped to the liver's box + :data:`TUMOUR_CROP_MARGIN_PX` before
      resizing (see ``slice_cache.build_slice_cache(crop_to="liver")``), so a small lesion covers
      more input pixels.

    Args:
        profile: A ``Profile`` (image_size, context_slices, non_liver_fraction).
        **overrides: Any other setting.
    """
    values = dict(window_level_hu=70.0, window_width_hu=200.0)
    values.update(overrides)
    return settings_from_profile(profile, **values)

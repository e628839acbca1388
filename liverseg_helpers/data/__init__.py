"""Chapter 01, the data: the synthetic CT phantom, dataset cards and downloads.

``phantom`` writes a synthetic cohort in the 3D-IRCADb layout (``phantom_anatomy`` draws its
tissues from the shapes of ``phantom_parts``); ``manifest`` describes each real CT dataset and
checks a local copy; ``download`` fetches and unpacks one. Reading CT and masks lives in
:mod:`liverseg_helpers.io`.
"""

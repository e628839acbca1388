"""Chapter 05, scoring a predicted liver: the 3D metrics of SLIVER07 and LiTS, in millimetres.

``evaluate`` scores one patient or a cohort and writes the per-patient table; the tumour
scores are in :mod:`liverseg_helpers.tumours.lesion_eval`.
"""

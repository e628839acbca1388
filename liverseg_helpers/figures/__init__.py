"""Figures of the course: CT overlays, three views, metric plots, and a CT viewer.

``viz`` draws the CT and its masks (chapters 01 to 05) and the training curves (04),
``result_plots`` the figures that score a prediction (05), ``widgets`` the interactive viewer
used in JupyterLab; the tumour chapter's figures are in
:mod:`liverseg_helpers.tumours.lesion_viz`.
"""

"""Chapter 06, liver tumours: the two-stage cascade, lesion scores and lesion figures.

``tumour`` segments lesions inside the predicted liver (stage two of the cascade, a step of
:func:`liverseg_helpers.inference.pipeline.segment_ct`) and lists them; ``lesion_eval`` scores
tumour masks per voxel and per lesion; ``lesion_viz`` draws the chapter's figures;
``hu_rule`` is the baseline without learning that a trained stage two must beat.
"""

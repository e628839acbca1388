"""Chapter 05, segmenting a whole CT: the liver model, post-processing, the pipeline.

``predict`` runs the liver model slice by slice and cleans the mask in 3D; ``pipeline`` is
the one road the ``liverseg predict`` command takes: load the case, liver stage(s), optional
tumour stage (:mod:`liverseg_helpers.tumours.tumour`), post-process, write.
"""

"""Chapter 05, segmenting a whole CT: the liver model, post-processing, the pipeline.

``predict`` runs the liver model slice by slice; ``postprocess`` cleans the mask in 3D;
``ensemble_members`` decides which members of an ensemble run on a given CT and
``precision`` whether they compute in bfloat16; ``pipeline`` is the one road the
``liverseg predict`` command takes: load the case, liver stage(s), optional tumour stage
(:mod:`liverseg_helpers.tumours.tumour`), post-process, write.
"""

"""Chapter 02, preparing CT for a 2D UNet: patient splits, preprocessing, batches.

``split`` puts patients (never slices) into train / validation / test; ``preprocess`` windows,
resizes and stacks slices (``slice_geometry`` holds the in-plane resizing, ``views`` the
coronal and sagittal planes); ``augment`` and ``dataset`` turn cases into training batches.
"""

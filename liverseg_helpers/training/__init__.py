"""Chapters 03 and 04, the network and its training: the UNet, losses, the training loop.

``model`` builds and saves the UNet (``quantize`` stores its kernels as int8, which the
shipped reference model uses); ``losses`` holds the segmentation losses; ``train`` goes from
a cohort to a run folder: what to train in ``train_config``, the split, slice cache and batches
in ``train_data``, the loop itself in ``fit``, and ``run_reuse`` guarding reruns.
"""

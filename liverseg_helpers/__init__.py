"""Helper package of the LiverSeg course: one subpackage per stage of the course.

``io`` (reading and writing CT and masks), ``data`` (phantom, dataset cards: chapter 01),
``preparation`` (splits, preprocessing, batches: 02), ``training`` (the UNet, losses, the
training loop: 03 and 04), ``inference`` (whole-CT prediction and the ``liverseg predict``
pipeline: 05), ``evaluation`` (3D metrics: 05), ``figures`` (plots and the CT viewer),
``tumours`` (the tumour cascade, its scores and figures: 06); ``course``, ``config`` and
``cli`` run it. ``research`` is the bench behind the shipped models (cross-validation,
recipes, ensembles); the notebooks do not need it. Importing the package does not import
TensorFlow.
"""

__version__ = "0.1.0"

"""Helper package of the LiverSeg course.

Modules map to course chapters: ``io`` and ``phantom`` (data), ``preprocess`` and
``dataset`` (input pipeline), ``model``, ``losses`` and ``train`` (the UNet),
``predict``, ``evaluate`` and ``viz`` (results), ``course`` and ``cli`` (running it).
Importing the package does not import TensorFlow.
"""

__version__ = "0.1.0"

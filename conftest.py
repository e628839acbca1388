"""pytest set-up shared by the unit tests and the nbval run of the notebooks.

nbval cannot pass papermill parameters, so the notebooks read the smoke profile and a
throw-away run folder from the environment (see ``liverseg_helpers.config``).
"""

import os
import tempfile

os.environ.setdefault("LIVERSEG_PROFILE", "smoke")
os.environ.setdefault("LIVERSEG_RUN_DIR", tempfile.mkdtemp(prefix="liverseg-nbval-"))
os.environ.setdefault("LIVERSEG_STATIC_VIEWER", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

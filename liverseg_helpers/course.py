"""Running the course: the notebooks' shared start-up and the papermill runner.

Every notebook's first code cell holds the same parameters (``PROFILE``, ``DATA_DIR``,
``RUN_DIR``, ``SEED``); :func:`start_notebook` turns them into folders, a profile and seeds.
Notebooks hand artefacts to each other only through the run folder.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from liverseg_helpers import config
from liverseg_helpers.atomic import write_json_atomic
from liverseg_helpers.errors import LiverSegError

NOTEBOOKS = (
    "01_data_exploration.ipynb",
    "02_preprocessing.ipynb",
    "03_unet_build.ipynb",
    "04_training.ipynb",
    "05_prediction_and_results.ipynb",
    "06_liver_tumours.ipynb",
)
# Set by the runner so the viewer draws a static figure where no widget front end exists.
ENV_STATIC_VIEWER = "LIVERSEG_STATIC_VIEWER"


class CourseError(LiverSegError):
    """A notebook of the course failed; the message names the notebook and the cell."""


class MissingArtefactError(LiverSegError, FileNotFoundError):
    """A file an earlier notebook should have written is not in the run folder."""


@dataclass(frozen=True)
class CourseContext:
    """What a notebook needs to know about its run.

    Attributes:
        profile: The size profile (see :mod:`liverseg_helpers.config`).
        data_dir: Folder of patient cases (a generated phantom cohort by default).
        run_dir: Folder where notebooks write and read artefacts.
        seed: The seed given to :func:`config.set_seeds`.
    """

    profile: config.Profile
    data_dir: Path
    run_dir: Path
    seed: int


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``pyproject.toml``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "liverseg_helpers").is_dir():
            return folder
    return start


def default_run_dir(profile_name: str) -> Path:
    """``runs/<profile>`` in the repository (or the current folder outside one)."""
    return find_repo_root() / "runs" / profile_name


def start_notebook(
    profile: str = "",
    data_dir: str = "",
    run_dir: str = "",
    seed: int = config.DEFAULT_SEED,
    need_data: bool = True,
) -> CourseContext:
    """Resolve a notebook's parameters, quiet TensorFlow's logging, seed, and make the data.

    Args:
        profile: ``smoke``, ``course`` or ``full``; "" reads ``$LIVERSEG_PROFILE``.
        data_dir: Cohort folder; "" reads ``$LIVERSEG_DATA_DIR``, else a phantom cohort is
            generated (once) in ``RUN_DIR/data``.
        run_dir: Run folder; "" reads ``$LIVERSEG_RUN_DIR``, else ``runs/<profile>``.
        seed: Seed for every random generator.
        need_data: Generate the phantom cohort if no data folder is given.

    Returns:
        The resolved :class:`CourseContext`.
    """
    # TensorFlow writes C++ log lines to stderr at import; they would fail nbval-checked cells.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    chosen = config.get_profile(profile or None)
    run_path = config.resolve_dir(run_dir, config.ENV_RUN_DIR, str(default_run_dir(chosen.name)))
    run_path.mkdir(parents=True, exist_ok=True)
    data_value = data_dir or os.environ.get(config.ENV_DATA_DIR, "")
    if data_value:
        data_path = Path(data_value).expanduser()
        if not data_path.exists():
            raise MissingArtefactError(f"{data_path}: data folder does not exist")
    else:
        data_path = run_path / "data"
        if need_data:
            from liverseg_helpers.data import phantom

            data_path = phantom.ensure_phantom_cohort(data_path, chosen)
    config.set_seeds(seed)
    return CourseContext(profile=chosen, data_dir=data_path, run_dir=run_path, seed=seed)


def find_real_data(real_data_dir: str = "") -> Path | None:
    """Folder of real 3D-IRCADb patients: the given one, else ``../shared/data/3Dircadb1``
    beside the repository (where the developers keep real cases), else None."""
    if real_data_dir:
        found = Path(real_data_dir).expanduser()
        if not found.is_dir():
            raise MissingArtefactError(f"{found}: real data folder does not exist")
        return found
    beside_repo = find_repo_root().parent / "shared" / "data" / "3Dircadb1"
    return beside_repo if beside_repo.is_dir() else None


def choose_model(model_path: str = "", run_dir: str | os.PathLike = "") -> Path:
    """The model a results notebook uses: the given file, else ``RUN_DIR/best.keras`` from
    notebook 04, else the reference model shipped in ``models/``.

    Raises:
        MissingArtefactError: None of them exists; the message names notebook 04.
    """
    if model_path:
        return require_artefact(model_path, "04_training.ipynb")
    from liverseg_helpers.inference.pipeline import REFERENCE_MODEL

    trained = Path(run_dir) / "best.keras"
    for candidate in (trained, REFERENCE_MODEL):
        if candidate.is_file():
            return candidate
    return require_artefact(trained, "04_training.ipynb")


def require_artefact(path: str | os.PathLike, notebook: str) -> Path:
    """Return ``path`` if it exists, else raise an error naming the notebook that makes it."""
    found = Path(path)
    if not found.exists():
        raise MissingArtefactError(
            f"{found} is missing: run notebook {notebook} first (with the same RUN_DIR)"
        )
    return found


# Given to every notebook's kernel: no TensorFlow C++ log lines, no debugger warning about
# frozen modules (debugpy), and the viewer draws a static figure (no widget front end).
KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    ENV_STATIC_VIEWER: "1",
}


KERNEL_NO_FD_CAPTURE = "--IPKernelApp.capture_fd_output=False"


def kernel_manager_logging_to(log_path: Path) -> type:
    """A Jupyter kernel manager class whose kernels write their stderr to ``log_path``.

    A kernel's own stderr is not a cell's output: it holds the kernel's start-up warnings and
    the C++ log lines TensorFlow writes even when told to be quiet (absl's "All log messages
    before absl::InitializeLog()" and oneDNN's notice). The course keeps them in a file, so the
    terminal shows only the progress, and a crash still leaves its reason behind.

    Args:
        log_path: File that receives the kernel's stderr (appended).

    Returns:
        A subclass of ``jupyter_client.AsyncKernelManager`` for papermill's
        ``kernel_manager_class`` option.
    """
    from jupyter_client import AsyncKernelManager

    class LoggingKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **KERNEL_ENV}
            # Output written straight to the process's stderr (C++ log lines) stays out of
            # the cells: ipykernel would otherwise forward it into the executed notebook.
            kw["extra_arguments"] = [*kw.get("extra_arguments", []), KERNEL_NO_FD_CAPTURE]
            with open(log_path, "ab") as log:  # the kernel keeps its own copy of the handle
                return await super().start_kernel(stderr=log, **kw)

    return LoggingKernelManager


def describe_failure(err, name: str, executed: Path, kernel_log: Path) -> str:
    """The message of a failed notebook: its cell, the error, the executed copy and the log.

    Args:
        err: papermill's ``PapermillExecutionError``.
        name: Notebook file name.
        executed: Path of the executed copy (it holds the whole traceback).
        kernel_log: Path of the kernel's stderr log.
    """
    cell = "\n".join(f"    {line}" for line in err.source.splitlines())
    return (
        f"{name} failed in cell [{err.exec_count}]:\n{cell}\n{err.ename}: {err.evalue}\n"
        f"executed notebook (whole traceback): {executed}\nkernel log: {kernel_log}"
    )


def run_course(
    profile: str | None = "course",
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = config.DEFAULT_SEED,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    source_dir: str | os.PathLike | None = None,
) -> Path:
    """Execute the notebooks in order with papermill into a run folder.

    Executed notebooks land in ``OUT/notebooks``, each with its kernel's log
    (``<name>.kernel.log``); models, metrics and figures in ``OUT``. Each notebook shows one
    progress line (papermill's tqdm bar: cells done and time taken). Execution stops at the
    first failing cell.

    Args:
        profile: ``smoke``, ``course`` or ``full``; None: ``$LIVERSEG_PROFILE`` or ``course``.
        data_dir: Cohort folder, or None for the generated phantom cohort.
        out_dir: Run folder, or None for ``runs/course-<profile>``.
        seed: Seed passed to every notebook.
        notebooks: Notebook file names to run, in order.
        source_dir: Folder of the notebooks (default: the repository's ``notebooks/``).

    Returns:
        The run folder.

    Raises:
        CourseError: A cell failed, or the kernel died; the message names the notebook, shows
            the failing cell and the error, and gives the paths of the executed copy and of
            the kernel's log.
    """
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    profile = config.get_profile(profile).name  # None: $LIVERSEG_PROFILE or course; typos fail
    source_dir = Path(source_dir or find_repo_root(Path(__file__).parent) / "notebooks")
    run_path = Path(out_dir) if out_dir else find_repo_root() / "runs" / f"course-{profile}"
    executed_dir = (run_path / "notebooks").resolve()  # papermill runs in source_dir
    executed_dir.mkdir(parents=True, exist_ok=True)
    parameters = {
        "PROFILE": profile,
        "DATA_DIR": str(Path(data_dir).resolve()) if data_dir else "",
        "RUN_DIR": str(run_path.resolve()),
        "SEED": seed,
    }
    timings: dict[str, float] = {}
    for index, name in enumerate(notebooks, start=1):
        source = source_dir / name
        if not source.is_file():
            raise CourseError(f"{source}: notebook not found")
        executed = executed_dir / name
        kernel_log = executed_dir / f"{Path(name).stem}.kernel.log"
        kernel_log.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(source_dir),
                progress_bar={
                    "desc": f"[{index}/{len(notebooks)}] {name}",
                    "bar_format": "{desc} |{bar:20}| {n_fmt}/{total_fmt} cells in {elapsed}",
                    "file": sys.stdout,
                },
                kernel_manager_class=kernel_manager_logging_to(kernel_log),
            )
        except PapermillExecutionError as err:
            raise CourseError(describe_failure(err, name, executed, kernel_log)) from None
        except DeadKernelError:
            raise CourseError(
                f"{name}: the kernel died (out of memory?); its log: {kernel_log}\n"
                f"executed notebook: {executed}"
            ) from None
        timings[name] = round(time.perf_counter() - started, 1)
    summary = {"profile": profile, "seed": seed, "seconds": timings, **parameters}
    write_json_atomic(summary, run_path / "course_summary.json")
    print(f"course finished in {sum(timings.values()):.0f} s; run folder: {run_path}")
    return run_path


def is_checked_cell(cell: dict) -> bool:
    """True for a code cell whose stored output nbval compares (``# NBVAL_CHECK_OUTPUT``)."""
    return cell.get("cell_type") == "code" and "NBVAL_CHECK_OUTPUT" in "".join(cell["source"])


def store_checked_outputs(executed: str | os.PathLike, source: str | os.PathLike) -> int:
    """Copy the outputs of nbval-checked cells from an executed notebook into its source,
    and clear every other output (the source notebooks in git stay clean).

    Args:
        executed: A notebook executed by :func:`run_course` (same cells as ``source``).
        source: The notebook in ``notebooks/`` to update in place.

    Returns:
        Number of checked cells whose output was stored.
    """
    import nbformat

    ran = nbformat.read(executed, as_version=4)
    nb = nbformat.read(source, as_version=4)
    ran_cells = {cell.source: cell for cell in ran.cells if is_checked_cell(cell)}
    stored = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        cell.outputs = []
        if is_checked_cell(cell) and cell.source in ran_cells:
            # nbval refuses stored outputs of a cell without an execution count.
            cell.execution_count = ran_cells[cell.source].execution_count
            cell.outputs = ran_cells[cell.source].outputs
            stored += 1
    nbformat.write(nb, source)
    return stored


def run_course_cli(args) -> int:
    """Handler of ``liverseg course``."""
    try:
        run_course(profile=args.profile, data_dir=args.data, out_dir=args.out, seed=args.seed)
    except CourseError as err:
        print(f"liverseg course: {err}", file=sys.stderr)
        return 1
    return 0

"""The course runner and the notebooks' conventions."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from liverseg_helpers import course

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SHARED_PARAMETERS = ("PROFILE", "DATA_DIR", "RUN_DIR", "SEED")


def read_notebook(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def first_code_cell(name: str):
    return next(cell for cell in read_notebook(name).cells if cell.cell_type == "code")


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_notebook_starts_with_tagged_parameters_cell(name):
    first = first_code_cell(name)
    assert "parameters" in first.metadata.get("tags", []), f"{name}: first code cell is not tagged"
    for parameter in SHARED_PARAMETERS:
        assert f"{parameter} = " in first.source, f"{name}: parameters cell lacks {parameter}"
    # literals only: one assignment per line, each with a comment
    for line in first.source.splitlines():
        assert " = " in line and "#" in line, f"{name}: parameter line without comment: {line}"


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_papermill_sees_every_parameter(name):
    """`papermill --help-notebook` lists each parameter; a comment holding "=" hides one."""
    import ast

    import papermill

    first = first_code_cell(name)
    assigned = [
        target.id
        for node in ast.parse(first.source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
    ]
    assert list(papermill.inspect_notebook(str(NOTEBOOK_DIR / name))) == assigned, name


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = read_notebook(name)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.outputs:
            assert course.is_checked_cell(cell), f"{name}: unchecked cell holds outputs"


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_notebook_cells_stay_short(name):
    nb = read_notebook(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert len(cell.source.splitlines()) <= 20, f"{name}: long cell:\n{cell.source}"


def test_every_listed_notebook_exists_and_no_other():
    on_disk = sorted(path.name for path in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert on_disk == sorted(course.NOTEBOOKS)


def test_require_artefact_names_the_notebook(tmp_path):
    with pytest.raises(course.MissingArtefactError, match="04_training.ipynb"):
        course.require_artefact(tmp_path / "best.keras", "04_training.ipynb")
    (tmp_path / "best.keras").write_bytes(b"x")
    assert course.require_artefact(tmp_path / "best.keras", "04") == tmp_path / "best.keras"


def test_choose_model_prefers_the_run_folder(tmp_path):
    (tmp_path / "best.keras").write_bytes(b"x")
    assert course.choose_model("", tmp_path) == tmp_path / "best.keras"
    with pytest.raises(course.MissingArtefactError, match="04_training"):
        course.choose_model(str(tmp_path / "nope.keras"), tmp_path)


def test_start_notebook_resolves_folders_from_the_environment(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("LIVERSEG_RUN_DIR", str(tmp_path / "run"))
    ctx = course.start_notebook("smoke", str(data), "", 7)
    assert ctx.profile.name == "smoke" and ctx.seed == 7
    assert ctx.run_dir == tmp_path / "run" and ctx.run_dir.is_dir()
    assert ctx.data_dir == data
    with pytest.raises(course.MissingArtefactError):
        course.start_notebook("smoke", str(tmp_path / "missing"), str(tmp_path / "run"))


def write_notebook(path: Path, sources: list[str]) -> None:
    cells = [new_code_cell(src) for src in sources]
    cells[0].metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=cells)
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nbformat.write(nb, path)


PARAMETERS_CELL = 'PROFILE = ""  # p\nDATA_DIR = ""  # d\nRUN_DIR = ""  # r\nSEED = 0  # s'


@pytest.mark.slow
def test_run_course_shows_one_quiet_progress_line_per_notebook(tmp_path, capfd, monkeypatch):
    # ipykernel forwards the process's own stderr into cells except under pytest: be a user
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    noisy_cell = (
        "import os\nfrom pathlib import Path\n"
        "os.write(2, b'I0000 port.cc:153] fake TensorFlow C++ log line\\n')\n"
        "print('cell ran')\n"
        "seen = [PROFILE, SEED, os.environ['TF_CPP_MIN_LOG_LEVEL']]\n"
        "Path(RUN_DIR, 'seen.txt').write_text(repr(seen))"
    )
    write_notebook(src / "a.ipynb", [PARAMETERS_CELL, noisy_cell])
    out = tmp_path / "run"
    course.run_course("smoke", out_dir=out, seed=5, notebooks=("a.ipynb",), source_dir=src)
    assert (out / "seen.txt").read_text() == "['smoke', 5, '3']"
    assert json.loads((out / "course_summary.json").read_text())["seed"] == 5
    printed = capfd.readouterr()
    # tqdm redraws its line with carriage returns; the last drawing is what stays on screen
    lines = [line.split("\r")[-1] for line in printed.out.rstrip("\n").split("\n")]
    assert re.fullmatch(r"\[1/1\] a\.ipynb \|.*\| 3/3 cells in \d\d:\d\d", lines[0]), lines
    assert lines[1].startswith("course finished in "), lines
    assert len(lines) == 2, lines
    # The kernel's own stderr (its start-up warnings, C++ log lines) goes to a log file.
    assert "fake TensorFlow" not in printed.out + printed.err
    assert "IPKernelApp" not in printed.out + printed.err
    assert "fake TensorFlow" in (out / "notebooks" / "a.kernel.log").read_text()
    # ... and not into the executed notebook a learner opens (a cell's output)
    executed = nbformat.read(out / "notebooks" / "a.ipynb", as_version=4)
    assert "fake TensorFlow" not in json.dumps([c.get("outputs") for c in executed.cells])


@pytest.mark.slow
def test_failed_notebook_shows_the_cell_the_error_and_the_executed_copy(
    tmp_path, monkeypatch, capsys
):
    from liverseg_helpers import cli

    src = tmp_path / "src"
    src.mkdir()
    write_notebook(src / "b.ipynb", [PARAMETERS_CELL, "ratio = 1\nratio / 0"])
    only_b = functools.partial(course.run_course, notebooks=("b.ipynb",), source_dir=src)
    monkeypatch.setattr(course, "run_course", only_b)
    out = tmp_path / "run"
    assert cli.main(["course", "--profile", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    executed = out.resolve() / "notebooks" / "b.ipynb"
    assert "b.ipynb failed in cell [3]:\n    ratio = 1\n    ratio / 0\n" in err  # [2]: papermill's
    assert "ZeroDivisionError: division by zero" in err
    assert f"executed notebook (whole traceback): {executed}" in err
    ran = nbformat.read(executed, as_version=4)
    assert ran.cells[-1].outputs[0]["ename"] == "ZeroDivisionError"


def test_store_checked_outputs_keeps_only_checked_cells(tmp_path):
    executed = tmp_path / "ran.ipynb"
    source = tmp_path / "src.ipynb"
    cells = [new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"), new_code_cell("print(2)")]
    for cell, text in zip(cells, ("1\n", "2\n"), strict=True):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nbformat.write(new_notebook(cells=cells), executed)
    nbformat.write(new_notebook(cells=[new_code_cell(c.source) for c in cells]), source)
    assert course.store_checked_outputs(executed, source) == 1
    stored = nbformat.read(source, as_version=4)
    assert stored.cells[0].outputs[0]["text"] == "1\n"
    assert stored.cells[1].outputs == []


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOC_PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
COURSE_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[cpu,dev]" '
    "&& .venv/bin/liverseg course --profile course"
)
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[cpu,dev]" && .venv/bin/python -m pytest'
)


def test_readme_reads_in_two_minutes():
    assert len(README.read_bytes()) <= 12_000, "README.md: over 12,000 bytes; move detail to docs/"


def test_readme_gives_the_two_commands_and_ci_runs_the_second():
    text = README.read_text(encoding="utf-8")
    assert f"\n{COURSE_COMMAND}\n" in text and f"\n{TEST_COMMAND}\n" in text
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci_lines[-1] == TEST_COMMAND


def parse_markdown(page: Path) -> list:
    # markdown-it-py comes with keras (through rich): a real parser, so code blocks hold no links
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8"))


def markdown_targets(page: Path) -> list[str]:
    """Every link and image target of a markdown page."""
    targets = []
    for token in parse_markdown(page):
        for child in token.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if target:
                targets.append(str(target))
    return targets


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces
    to hyphens; a repeated heading gets -1, -2, ..."""
    anchors: set[str] = set()
    tokens = parse_markdown(page)
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        slug = re.sub(r"[^\w\- ]", "", inline.content.strip().lower()).replace(" ", "-")
        anchor, repeat = slug, 0
        while anchor in anchors:
            repeat += 1
            anchor = f"{slug}-{repeat}"
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    for target in markdown_targets(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.exists(), f"{page.name}: link {target}: {linked} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in heading_anchors(linked), f"{page.name}: link {target}: no heading"


@pytest.mark.parametrize("name", course.NOTEBOOKS)
def test_readme_gives_the_learner_time_each_notebook_states(name):
    """The README's "your time" holds the minutes of the notebook's own "**Your time:**" line."""
    heading = read_notebook(name).cells[0].source
    stated = re.search(r"\*\*Your time:\*\*([^*]*)", heading)
    assert stated, f"{name}: no '**Your time:**' under the title"
    row = next(line for line in README.read_text(encoding="utf-8").splitlines() if name in line)
    your_time = row.split(" | ")[-2]
    minutes = r"\d+(?:[–-]\d+)?"
    assert re.findall(minutes, your_time) == re.findall(minutes, stated.group(1)), (name, row)

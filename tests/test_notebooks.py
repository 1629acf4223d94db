"""The notebooks in notebooks/: each runs top to bottom (on small committed data where it reads a
sweep's results), makes the figures its data allow, and is committed clean and thin.

The kernel is this interpreter: a kernel spec named "python3" is installed into a temporary prefix
that ``JUPYTER_PATH`` puts first, so a user-wide Jupyter set-up plays no part. The small results
tables under tests/data/notebooks/ come from the sweep files beside them (see their comments).
"""

from __future__ import annotations

import ast
import base64
import re
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DATA = Path(__file__).resolve().parent / "data" / "notebooks"
ALLOWED_IMPORTS = {"analysis", "traces", "numpy", "pandas", "matplotlib"}
MAX_SECONDS = 60
MAX_CELL_LINES = 12
PNG = b"\x89PNG\r\n\x1a\n"

SMALL_STUDY = {"results_path": str(DATA / "study-results.parquet"), "protocol_path": str(DATA / "protocol.toml")}
SMALL_FIGURES = {"study_path": str(DATA / "study-results.parquet"),
                 "threshold_path": str(DATA / "threshold-results.parquet"),
                 "ablation_path": str(DATA / "ablation-results.parquet"),
                 "protocol_path": str(DATA / "protocol.toml")}
RUNS = {  # notebook -> the parameters a test gives it (01 runs on the bundled traces, its defaults)
    "01_explore_profiles.ipynb": {},
    "02_analyze_results.ipynb": SMALL_STUDY,
    "03_reproduce_figures.ipynb": SMALL_FIGURES,
}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _python(source: str) -> str:
    """A cell's source without IPython's line magics (``%matplotlib inline``), which are not Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path_factory.mktemp("jupyter")
    # written straight where Jupyter looks under the prefix: ipykernel's install() stages the spec in
    # a temp dir of its own and leaves that dir's empty parent behind in the system temp dir
    write_kernel_spec(prefix / "share" / "jupyter" / "kernels" / "python3")
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, f"kernel python3 resolves to {spec.argv[0]}, not {sys.executable}"
    yield "python3"
    patch.undo()


def execute(name: str, parameters: dict, kernel: str):
    """Run notebook ``name`` from notebooks/ (its working directory, as Jupyter runs it) with
    ``parameters`` set in a cell after its parameters cell; returns the executed notebook."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = _code_cells(notebook)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{name}: the first code cell is not tagged 'parameters'"
    assigned = {target.id for node in ast.walk(ast.parse(first.source)) if isinstance(node, ast.Assign)
                for target in ast.walk(node) if isinstance(target, ast.Name)}
    assert set(parameters) <= assigned, f"{name} has no parameter {sorted(set(parameters) - assigned)}"
    injected = nbformat.v4.new_code_cell("\n".join(f"{key} = {value!r}" for key, value in parameters.items()))
    notebook.cells.insert(notebook.cells.index(first) + 1, injected)
    started = time.monotonic()
    NotebookClient(notebook, kernel_name=kernel, timeout=MAX_SECONDS,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert time.monotonic() - started < MAX_SECONDS, f"{name} took more than {MAX_SECONDS} s"
    return notebook


def outputs(notebook, kind: str) -> list:
    """Every output of ``kind``: 'image/png' (the figures, decoded), or 'stream' (printed text)."""
    found = []
    for cell in _code_cells(notebook):
        for output in cell.get("outputs", []):
            if kind == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif kind != "stream" and kind in output.get("data", {}):
                found.append(base64.b64decode(output.data[kind]) if kind == "image/png" else output.data[kind])
    return found


def test_every_notebook_is_run_by_a_test():
    assert [p.name for p in _notebooks()] == sorted(RUNS)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for k, cell in enumerate(_code_cells(notebook)):
        assert cell.get("outputs") == [], f"{path.name} code cell {k} has outputs"
        assert cell.get("execution_count") is None, f"{path.name} code cell {k} has an execution count"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_code_cells_are_short_and_import_only_the_project_and_its_libraries(path):
    for k, cell in enumerate(_code_cells(nbformat.read(path, as_version=4))):
        tree = ast.parse(_python(cell.source))
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        outside = {m for m in modules if m.split(".")[0] not in ALLOWED_IMPORTS}
        assert not outside, f"{path.name} code cell {k} imports {sorted(outside)}"
        helpers = [node.name for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not helpers, f"{path.name} code cell {k} defines {helpers}: helpers belong in analysis/"
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, f"{path.name} code cell {k} is long"


def test_the_profiles_notebook_draws_three_figures_per_bundled_bundle(kernel_name):
    from traces.bundle import TraceBundle

    notebook = execute("01_explore_profiles.ipynb", RUNS["01_explore_profiles.ipynb"], kernel_name)
    figures = outputs(notebook, "image/png")
    assert len(figures) == 3 * 2 and all(f.startswith(PNG) for f in figures)  # latency, confidence, cost
    tables = "\n".join(outputs(notebook, "text/html"))
    for name in ("digits-cpu", "sst2-cpu"):
        for variant in TraceBundle.load(ROOT / "traces" / "data" / name).variants:
            assert variant in tables, f"{variant} of {name} is in no table"


def test_the_results_notebook_tabulates_compares_and_tests(kernel_name):
    from analysis.protocol import load_protocol

    notebook = execute("02_analyze_results.ipynb", RUNS["02_analyze_results.ipynb"], kernel_name)
    results = pd.read_parquet(SMALL_STUDY["results_path"])
    workloads = results["workload"].nunique()
    figures = outputs(notebook, "image/png")
    assert len(figures) == workloads + 1  # a Pareto figure per workload, then the primary metric's effects
    text = "".join(outputs(notebook, "stream"))
    assert text.count("Hypervolume per policy") == workloads
    for a, b in (("planner", "infaas"), ("planner", "oracle-static")):
        assert f"{a} against {b}, paired by seed" in text
    tables = "\n".join(outputs(notebook, "text/html"))
    comparisons = load_protocol(SMALL_STUDY["protocol_path"]).comparisons
    assert all(f"<td>{b}</td>" in tables for _, b in comparisons)


def test_the_figures_notebook_draws_every_figure_the_data_allow(kernel_name):
    from analysis.protocol import load_protocol

    notebook = execute("03_reproduce_figures.ipynb", RUNS["03_reproduce_figures.ipynb"], kernel_name)
    study = pd.read_parquet(SMALL_FIGURES["study_path"])
    variations = pd.read_parquet(SMALL_FIGURES["ablation_path"])["variation"].unique()
    factors = {re.sub(r"=.*", "", v) for v in variations if v != "base"}
    expected = (study["workload"].nunique()                        # Pareto frontier, per workload
                + study["workload"].nunique()                      # baseline comparison, per workload
                + study["requests.deadline_ms"].nunique()          # workload sensitivity, per deadline
                + 1                                                # threshold sensitivity
                + len(load_protocol(SMALL_FIGURES["protocol_path"]).metrics)  # effect sizes, per metric
                + len(factors))                                    # the ablation, per factor
    figures = outputs(notebook, "image/png")
    assert len(figures) == expected and all(f.startswith(PNG) for f in figures)
    overview = "".join(outputs(notebook, "stream"))
    assert all(f"| {factor} |" in overview for factor in factors)

"""The layers hold: who may import whom inside ``interest``, and which start-ups stay free of TensorFlow.

The import map is read from the source (``ast``), lazy imports inside functions included, so a
shortcut taken in a function body breaks the build as surely as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "interest"

# The layer of each top-level part of ``interest`` (docs/design.md, "The layers"): a module imports only from
# its own part or a lower layer. training and evaluation share a layer, so neither imports the other.
LAYERS: dict[str, int] = {
    "schema": 0,
    "rows": 0,
    "errors": 0,
    "faults": 0,
    "config": 1,
    "storage": 1,
    "logs": 1,
    "java": 1,
    "layout": 2,
    "spark": 2,
    "tracking": 2,
    "cli": 3,
    "synth": 3,
    "locks": 3,
    "io": 3,
    "data": 3,
    "etl": 4,
    "models": 4,
    "scoring": 5,
    "training": 6,
    "evaluation": 6,
    "serving": 7,
    "nightly": 8,
}
HEAVY = ("tensorflow", "keras")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def import_map() -> dict[str, set[str]]:
    """``interest`` module -> the ``interest`` modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, found = _module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("interest.")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("interest"):
                if node.module == "interest":  # from interest import storage, io
                    found |= {f"interest.{a.name}" for a in node.names}
                else:
                    found.add(node.module)
        graph[name] = found
    return graph


def test_every_part_has_a_layer():
    parts = {_part(m) for m in import_map()} - {""}
    assert parts == set(LAYERS), "add the new part of interest/ to LAYERS and to the picture in docs/design.md"


def test_imports_only_go_down_the_layers():
    upward = [
        f"{src} imports {dst}"
        for src, targets in import_map().items()
        if _part(src)
        for dst in targets
        if _part(dst) != _part(src) and LAYERS[_part(dst)] >= LAYERS[_part(src)]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_training_and_evaluation_do_not_depend_on_each_other():
    graph = import_map()
    crossing = [
        f"{src} imports {dst}"
        for src, targets in graph.items()
        for dst in targets
        if {_part(src), _part(dst)} == {"training", "evaluation"}
    ]
    assert not crossing, crossing


def test_the_layer_check_catches_a_crossing(tmp_path, monkeypatch):
    """The checks above can fail: a training module that imports evaluation is reported."""
    fake = tmp_path / "interest"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "bad.py").write_text("def f():\n    from interest.evaluation import report\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="interest.training.bad imports interest.evaluation"):
        test_training_and_evaluation_do_not_depend_on_each_other()
    with pytest.raises(AssertionError, match="interest.training.bad imports interest.evaluation"):
        test_imports_only_go_down_the_layers()


# where ``dt=D`` is a label in log lines and error messages, not a folder
LABELS = {PACKAGE / "logs.py"}


def dated_paths(roots: list[Path]) -> list[str]:
    """``file:line`` of every f-string that builds a dated path (``dt={...}`` in text without a
    space: a path or a folder name, not a message) outside ``interest/layout.py``."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path == PACKAGE / "layout.py" or path in LABELS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.JoinedStr):
                    continue
                parts = node.values
                text = "".join(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str))
                dated = any(
                    isinstance(a, ast.Constant) and str(a.value).endswith("dt=") and isinstance(b, ast.FormattedValue)
                    for a, b in zip(parts, parts[1:])
                )
                if dated and " " not in text:
                    found.append(f"{root.name}/{path.relative_to(root)}:{node.lineno}")
    return found


def test_only_the_layout_builds_dated_paths():
    """``Layout`` (interest/layout.py) is the one home of every dated path: checkpoints, indexes,
    locks, SavedModels, table partitions, sessionize outputs, reports, logs."""
    found = dated_paths([PACKAGE, ROOT / "jobs"])
    assert not found, "dated paths outside interest/layout.py (use Layout or layout.partition):\n" + "\n".join(found)


def test_the_dated_path_check_catches_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('folder = f"{root}/dt={date}/infer"\nmessage = f"not publishing dt={date}: gate"\n')
    assert dated_paths([tmp_path]) == [f"{tmp_path.name}/bad.py:1"]  # the path, not the message


def _heavy_imports(args: list[str]) -> set[str]:
    """Top-level packages among HEAVY that ``python -X importtime <args>`` loads."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    names = {ln.rsplit("|", 1)[-1].strip() for ln in run.stderr.splitlines() if ln.startswith("import time:")}
    return {n for n in names if n.split(".")[0] in HEAVY}


def test_etl_and_lower_layers_never_load_tensorflow():
    light = sorted(
        m
        for m in import_map()
        if _part(m)
        in {
            "etl",
            "data",
            "schema",
            "rows",
            "errors",
            "faults",
            "config",
            "storage",
            "logs",
            "layout",
            "locks",
            "spark",
            "io",
            "cli",
            "synth",
        }
        and m != "interest.data.reader"
    )
    assert "interest.etl.sessionize" in light and "interest.data.files" in light
    assert not _heavy_imports(["-c", "; ".join(f"import {m}" for m in light)])
    assert "tensorflow" in _heavy_imports(["-c", "import interest.data.reader"])  # the probe sees TensorFlow


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.py")))
def test_job_start_up_does_not_load_tensorflow(job):
    assert not _heavy_imports([f"jobs/{job}", "--help"])

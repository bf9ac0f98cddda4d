"""Run the walkthrough notebook top to bottom and write it back with its outputs and pictures.

    .venv/bin/python notebooks/execute.py          # or: make notebook

The data goes to ``data/notebook`` (or ``$INTEREST_NOTEBOOK_ROOT``); outputs name it as ``data/notebook``
and the repository as ``.``, so the committed notebook carries no machine's paths. The test suite
runs the same notebook (``tests/test_notebook.py``) so it cannot rot between refreshes.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def scrub(text: str, root: Path) -> str:
    """Machine paths in an output -> paths relative to the repository."""
    text = text.replace(str(root), "data/notebook").replace(str(REPO), ".")
    return re.sub(r"/tmp/[\w.-]+", "<scratch>", text)


def tidy(nb: nbformat.NotebookNode, root: Path) -> nbformat.NotebookNode:
    """Keep what a reader looks at: printed results, tables and pictures. Start-up noise on stderr
    (Spark, Ivy, TensorFlow) goes; machine paths become relative ones."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "outputs" not in cell:
            continue
        cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
        for out in cell.outputs:
            if "text" in out:
                out["text"] = scrub(out["text"], root)
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in out.get("data", {}):
                    out["data"][kind] = scrub(out["data"][kind], root)
    return nb


def main() -> None:
    root = Path(os.environ.get("INTEREST_NOTEBOOK_ROOT") or REPO / "data" / "notebook")
    shutil.rmtree(root, ignore_errors=True)
    os.environ["INTEREST_NOTEBOOK_ROOT"] = str(root)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    nbformat.write(tidy(nb, root), NOTEBOOK)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    print(f"wrote {NOTEBOOK.relative_to(REPO)}: {len(nb.cells)} cells, {images} pictures (data under {root})")


if __name__ == "__main__":
    sys.exit(main())

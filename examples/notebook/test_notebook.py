"""Runs the notebook with nbclient (as `jupyter execute` would) and checks what each cell showed."""

import base64
import glob
import sys

import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
scratch_before = set(glob.glob("/tmp/boxlite-notebook-*"))
NotebookClient(notebook, timeout=900, kernel_name="python3").execute()
cells = [cell for cell in notebook.cells if cell.cell_type == "code"]


def text(cell) -> str:
    """Everything a cell printed or showed as text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def check(condition: bool, what: str, cell) -> None:
    if not condition:
        sys.exit(f"notebook check failed: {what}; the cell showed:\n{text(cell)}")


start, helpers, state, chart, files, cleanup = cells
check("is running" in text(start), "the box runs", start)
check(text(state).endswith(", 200)"), "numpy state from the cell before is there", state)
images = [o for o in chart.outputs if o.output_type == "display_data" and "image/png" in o.data]
check(len(images) == 1, "the chart is shown inline, once", chart)
check(base64.b64decode(images[0].data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n"), "the chart is a PNG", chart)
summary = "count=100 sum=5050 mean=50.50"
check(text(files).count(summary) == 2, "the box read the copied-in file and the summary came back out", files)
check("removed" in text(cleanup), "the box is removed", cleanup)
left = set(glob.glob("/tmp/boxlite-notebook-*")) - scratch_before
check(not left, f"the notebook removes its scratch folder (left: {sorted(left)})", cleanup)
print(f"examples/notebook: {len(cells)} cells ran; chart {len(base64.b64decode(images[0].data['image/png']))} bytes of PNG")

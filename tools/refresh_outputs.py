"""Run a notebook top to bottom and refresh the outputs of the cells that keep them (the ones with outputs now).

Usage: .venv/bin/python tools/refresh_outputs.py nbs/NAME.ipynb   (then nbdev-clean --fname nbs/NAME.ipynb)
Cells without outputs stay without: only outputs a notebook already shows as teaching are rewritten."""
import json, os, sys
from pathlib import Path
from fastcore.nbio import read_nb
from execnb.shell import CaptureShell

def refresh(path):
    path = Path(path).resolve()
    nb = read_nb(path)
    os.chdir(path.parent)
    sh = CaptureShell()
    sh.run_all(nb, exc_stop=True)
    raw = json.loads(path.read_text())
    fresh = {c.get("id"): c.get("outputs") for c in nb.cells}
    n = 0
    for c in raw["cells"]:
        if c["cell_type"] == "code" and c.get("outputs"):
            c["outputs"] = [dict(o) for o in fresh[c["id"]]]; n += 1
    path.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
    return n

if __name__ == "__main__":
    for p in sys.argv[1:]: print(p, refresh(p), "cells refreshed")

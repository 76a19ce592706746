"""Draw the pictures that the notebooks show from nbs/images/ (kept as files so that notebooks stay small).

Run after a change to `draw_workflow` or to the example workflows: .venv/bin/python tools/make_images.py"""
import os
os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path
from subterranean.workflow import load_workflow, example_path, draw_workflow

def main(out=Path(__file__).parent.parent/"nbs"/"images"):
    out.mkdir(parents=True, exist_ok=True)
    for name in ("travel_booking", "zoom_support", "insurance_claims"):
        draw_workflow(load_workflow(example_path(name)), out/f"{name}.png", dpi=60)
        print("wrote", out/f"{name}.png")

if __name__ == "__main__": main()

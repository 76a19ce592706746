"""What `pip install` resolves for a user: the package installed into a fresh virtual environment WITHOUT
constraints-cpu.txt (the package's own ranges decide, as for anyone following the README), then a tiny compile with
the installed console script. Slow: it downloads the train extra's packages from the registry."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).parent.parent

def run(*cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-3000:])
    return p.stdout

@pytest.mark.slow
def test_fresh_install_compiles(tmp_path):
    env = tmp_path/"venv"
    run(sys.executable, "-m", "venv", env)
    pip = [env/"bin"/"python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, "torch==2.13.0")                      # the CPU build from local disk; a plain `torch` pulls a CUDA build
    run(*pip, f"{ROOT}[train]")                     # no constraints file: the package's own ranges resolve
    got = json.loads(run(env/"bin"/"python", "-c", "import json, importlib.metadata as m; print(json.dumps("
                         "{p: m.version(p) for p in ('trl', 'transformers', 'datasets', 'torch')}))"))
    assert got["trl"] != "1.15.0" and got["torch"].startswith("2.13.0"), got
    out = tmp_path/"run"
    p = subprocess.run([env/"bin"/"subterranean", "compile", ROOT/"workflows"/"travel_booking.yaml", "--out", out, "-n", "12",
                        "--epochs", "1", "--set", "tiny_hidden=64", "--set", "tiny_layers=2", "--eval-n", "1",
                        "--max-new-tokens", "8", "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})
    assert p.returncode == 0, (got, p.stdout[-2000:], p.stderr[-3000:])
    assert json.loads((out/"report.json").read_text())["training"]["steps"] >= 1

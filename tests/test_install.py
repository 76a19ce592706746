"""What `pip install` resolves for a user: the package with its `train` extra WITHOUT constraints-cpu.txt (the
package's own ranges decide, as for anyone following the README).

`test_fresh_resolution_trains`: pip resolves the install as into an empty environment (`--dry-run --ignore-installed`,
seconds). When it picks exactly the versions this environment has, the compiles the rest of the suite runs are the ones
a fresh install runs; when anything differs (a new release inside our ranges), the test builds that fresh environment
and compiles in it. `test_fresh_install_compiles` (slow, `pytest -m slow`) always builds it."""
import json, os, subprocess, sys
from importlib import metadata
from pathlib import Path
import pytest

ROOT = Path(__file__).parent.parent
TORCH = "torch==2.13.0"            # the CPU build from local disk; a plain `torch` pulls a CUDA build

def run(*cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-3000:])
    return p.stdout

def resolved(tmp_path) -> dict:
    "name -> version of everything pip would install for `ROOT[train]` into an empty environment."
    rep = tmp_path/"report.json"
    run(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--dry-run", "--ignore-installed",
        "--report", rep, TORCH, f"{ROOT}[train]")
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
           for i in json.loads(rep.read_text())["install"]}
    got.pop("subterranean-compiler")
    return got

def installed(name:str) -> str|None:
    try: return metadata.version(name)
    except metadata.PackageNotFoundError: return None

def fresh_install_compiles(tmp_path):
    "A new venv, `pip install ROOT[train]` with no constraints, then a tiny compile with its console script."
    env = tmp_path/"venv"
    run(sys.executable, "-m", "venv", env)
    pip = [env/"bin"/"python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, TORCH)
    run(*pip, f"{ROOT}[train]")
    got = json.loads(run(env/"bin"/"python", "-c", "import json, importlib.metadata as m; print(json.dumps("
                         "{p: m.version(p) for p in ('trl', 'transformers', 'datasets', 'torch')}))"))
    assert got["trl"] != "1.15.0" and got["torch"].startswith("2.13.0"), got
    out = tmp_path/"run"
    p = subprocess.run([env/"bin"/"subterranean", "compile", ROOT/"workflows"/"travel_booking.yaml", "--out", out,
                        "-n", "12", "--epochs", "1", "--set", "tiny_hidden=64", "--set", "tiny_layers=2",
                        "--eval-n", "1", "--max-new-tokens", "8", "--quiet"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})
    assert p.returncode == 0, (got, p.stdout[-2000:], p.stderr[-3000:])
    assert json.loads((out/"report.json").read_text())["training"]["steps"] >= 1

def test_fresh_resolution_trains(tmp_path):
    got = resolved(tmp_path)
    assert {"torch", "transformers", "trl", "peft", "datasets", "accelerate"} <= set(got), sorted(got)
    assert got["trl"] != "1.15.0", got             # 1.15.0's SFTTrainer crashes on the CPU
    differ = {k: (v, installed(k)) for k, v in got.items() if v != installed(k)}
    if differ: fresh_install_compiles(tmp_path)    # a new release inside our ranges: try it for real

@pytest.mark.slow
def test_fresh_install_compiles(tmp_path): fresh_install_compiles(tmp_path)

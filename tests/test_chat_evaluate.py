"""Chat and evaluation: the judge against a real HTTP server, the statistics against scipy, the arena driven headless,
and an Agent talking to a real `transformers serve` endpoint."""
import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from scipy import stats

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeChatServer

from subterranean.workflow import load_workflow, example_path, turn_nodes
from subterranean.generate import OpenAITeacher, turn_plan
from subterranean.chat import Agent, ChatArena, compare, scripted_user, system_prompt
from subterranean.evaluate import (CRITERIA, JudgeError, judge, parse_judgement, bootstrap_ci, wilcoxon_p,
                                   mann_whitney_p, cohens_d, holm, adherence, simulate, simulate_many, conversation_cost,
                                   evaluate_agents, report)

ROOT = Path(__file__).parent.parent

@pytest.fixture(scope="module")
def G(): return load_workflow(example_path("travel_booking"))

@pytest.fixture(scope="module")
def scenario(G):
    "A scenario along one real path of the workflow (built by hand: no dependence on the sampler's choices)."
    import networkx as nx
    ends = [n for n, d in G.nodes(data=True) if d.get("outcome") == "success"]
    path = next(nx.all_simple_paths(G, G.graph["start"], ends))
    slots = {k: (v[0] if isinstance(v, list) else v.get("choices", [v.get("min")])[0]) for k, v in G.graph["slots"].items()}
    return dict(id="s0000", path=path, slots=slots, persona="decisive", seed=0)

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, G):
    "A tiny random Llama with a BPE tokenizer trained on the workflow's text and a chat template, saved as a model dir."
    import torch
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast, LlamaConfig, LlamaForCausalLM
    texts = [G.graph["agent"]] + [e for _, d in G.nodes(data=True) for e in (d.get("examples") or []) + [d.get("say") or ""]]
    tk = Tokenizer(models.BPE(unk_token="<unk>")); tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False); tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts * 2, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<|end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<|end|>", pad_token="<|end|>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=8192, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(d); tok.save_pretrained(d)
    return d

@pytest.fixture(scope="module")
def local(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)

GOOD = {k: {"score": 4, "reason": "ok"} for k in CRITERIA}

def scripted(replies):
    "A chat-completions reply function that answers the n-th request with replies[n] (then the last one)."
    return lambda req, n: replies[min(n, len(replies) - 1)]

# ---- the judge, over real HTTP --------------------------------------------------------------------------------

def test_judge_retries_malformed_and_out_of_range(G, scenario):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, where to?"}]
    bad_range = json.dumps({**GOOD, "consistency": {"score": 6, "reason": "too good"}})
    good = json.dumps({**GOOD, "task_success": {"score": 3, "reason": "skipped the review"}})
    with FakeChatServer(reply=scripted(["I think it went well!", bad_range, good])) as srv:
        t = OpenAITeacher("judge", base_url=srv.url, max_retries=0, temperature=0)
        j = judge(conv, G, t, scenario=scenario)
        assert srv.requests == 3 and j["tries"] == 3
        assert j["scores"]["task_success"] == 3 and j["failure"] is True and j["reasons"]["task_success"] == "skipped the review"
        assert j["prompt_tokens"] > 0 and j["completion_tokens"] > 0
    # what the judge was told: the rubric with anchors in the system prompt, the procedure and transcript after it
    with FakeChatServer(reply=lambda req, n: (seen.append(req), "```json\n" + json.dumps(GOOD) + "\n```")[1]) as srv:
        seen = []
        j = judge(conv, G, OpenAITeacher("judge", base_url=srv.url, max_retries=0), scenario=scenario)
        assert j["tries"] == 1 and j["failure"] is False
        sys_msg, user_msg = seen[0]["messages"][0]["content"], seen[0]["messages"][1]["content"]
        assert all(k in sys_msg for k in CRITERIA) and "1 =" in sys_msg and "5 =" in sys_msg
        assert "Hello, where to?" in user_msg and "success" in user_msg

def test_judge_retry_feedback_and_final_error(G, scenario):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    missing = json.dumps({k: v for k, v in GOOD.items() if k != "naturalness"})
    with FakeChatServer(reply=lambda req, n: (seen.append(req), ["{broken", missing, "[1, 2, 3]"][n])[1]) as srv:
        seen = []
        with pytest.raises(JudgeError) as e:
            judge(conv, G, OpenAITeacher("judge", base_url=srv.url, max_retries=0), scenario=scenario, tries=3)
        msg = str(e.value)
        assert "3 tries" in msg and "not valid JSON" in msg and "'naturalness' is missing" in msg and "not an object" in msg
        assert srv.requests == 3
        # a retry shows the model its bad answer and what was wrong with it
        assert seen[1]["messages"][-2] == {"role": "assistant", "content": "{broken"}
        assert "invalid" in seen[1]["messages"][-1]["content"]

def test_parse_judgement_rejects():
    for bad in ['{"task_success": 3}', json.dumps({**GOOD, "naturalness": {"score": 0}}), json.dumps({**GOOD, "naturalness": {"score": "high"}}),
                json.dumps({**GOOD, "naturalness": {"score": 2.5}}), json.dumps({**GOOD, "naturalness": {"score": True}}), ""]:
        with pytest.raises(ValueError): parse_judgement(bad)
    assert parse_judgement(json.dumps({**GOOD, "naturalness": {"score": "5", "reason": "r"}}))["scores"]["naturalness"] == 5

# ---- statistics against scipy ---------------------------------------------------------------------------------

A = [4, 5, 3, 4, 5, 2, 4, 5, 3, 4, 5, 4, 3, 5, 4]
B = [3, 4, 3, 2, 4, 2, 3, 3, 2, 4, 4, 3, 3, 4, 2]

def test_wilcoxon_and_mann_whitney_match_scipy():
    assert wilcoxon_p(A, B) == pytest.approx(stats.wilcoxon(A, B).pvalue, rel=1e-12)
    assert wilcoxon_p(A, B) < 0.01
    assert mann_whitney_p(A, B) == pytest.approx(stats.mannwhitneyu(A, B, alternative="two-sided").pvalue, rel=1e-12)
    assert wilcoxon_p(A, A) == 1.0 and mann_whitney_p([3, 3], [3, 3]) == 1.0

def test_cohens_d_known_value():
    a, b = np.array(A, float), np.array(B, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert cohens_d(A, B) == pytest.approx((a.mean() - b.mean()) / pooled)
    assert cohens_d([1, 2, 3], [2, 3, 4]) == pytest.approx(-1.0)   # means differ by 1, both SDs 1
    assert cohens_d(B, A) == pytest.approx(-cohens_d(A, B))

def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001, 0.02, 0.9]) == pytest.approx([1.0, 0.004, 0.06, 1.0])
    assert holm([0.2]) == [0.2]

def test_bootstrap_matches_scipy():
    x = np.array(A, float)
    lo, hi = bootstrap_ci(x, n=5000)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=5000, random_state=1).confidence_interval
    assert lo < x.mean() < hi
    assert lo == pytest.approx(ref.low, abs=0.1) and hi == pytest.approx(ref.high, abs=0.1)
    assert bootstrap_ci([3, 3, 3]) == (3.0, 3.0) and bootstrap_ci(x, n=500) == bootstrap_ci(x, n=500)   # deterministic

# ---- adherence, cost ------------------------------------------------------------------------------------------

def test_adherence_on_template_lines(G, scenario):
    from subterranean.workflow import fill
    nodes = turn_nodes(G, scenario["path"])
    msgs = []
    for n in nodes:
        d = G.nodes[n]
        msgs += [{"role": "user", "content": "ok"}, {"role": "assistant", "content": fill((d.get("examples") or [d.get("say")])[0], scenario["slots"])}]
    a = adherence(msgs, G, scenario["path"], scenario["slots"])
    assert a["accuracy"] == 1.0 and a["first_divergence"] is None and a["right_end"] and a["actual"] == nodes
    swapped = msgs[:1] + msgs[3:4] + msgs[2:3] + msgs[1:2] + msgs[4:]   # turns 0 and 1 exchanged
    b = adherence(swapped, G, scenario["path"], scenario["slots"])
    assert b["first_divergence"] == 0 and b["accuracy"] == pytest.approx((len(nodes) - 2) / len(nodes))

def test_cost():
    c = conversation_cost([dict(prompt_tokens=2000, completion_tokens=50, latency=1.5)] * 2, prices={"prompt": 2.5, "completion": 10})
    assert c["usd"] == pytest.approx((4000 * 2.5 + 100 * 10) / 1e6) and c["latency"] == 3.0 and c["latency_per_turn"] == 1.5

# ---- agents, the arena, simulate and evaluate -----------------------------------------------------------------

def test_agent_modes_and_local_reply(G, local):
    m, tok = local
    with pytest.raises(ValueError, match="mode"): Agent(m, tok, G, mode="orchestrated")
    with pytest.raises(ValueError, match="base_url"): Agent(G=G)
    comp, ctx = Agent(m, tok, G, "compiled", max_new_tokens=8), Agent(m, tok, G, "in-context", max_new_tokens=8)
    h = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "Hi!"}]
    r = comp.reply(h)
    assert r["completion_tokens"] >= 1 and r["latency"] > 0 and comp.messages(h)[0]["content"] == G.graph["agent"]
    assert ctx.reply(h)["prompt_tokens"] > 10 * r["prompt_tokens"]
    pieces = list(comp.stream(h))
    assert "".join(pieces).strip() == comp.last["text"] and comp.last["completion_tokens"] >= 1

def test_arena_headless(G, local, scenario):
    import ipywidgets as W
    m, tok = local
    agents = {"base": Agent(m, tok, G, "base", max_new_tokens=6), "in-context": Agent(m, tok, G, "in-context", max_new_tokens=6)}
    arena = ChatArena(agents, G)
    assert isinstance(arena.widget, W.VBox)
    arena.send_button.click()                                        # nothing typed: a hint, no turn
    assert "Type a message" in arena.status.value and all(h == [] for h in arena.histories.values())
    arena.box.value = "I want to go to <Japan> & more"
    arena.send_button.click()
    assert arena.box.value == "" and all(len(h) == 2 for h in arena.histories.values())
    log = arena.logs["base"].value
    assert "&lt;Japan&gt; &amp; more" in log and "prompt +" in log and "completion tokens" in log   # escaped, with stats
    assert arena.turns["in-context"][0]["prompt_tokens"] > arena.turns["base"][0]["prompt_tokens"]
    arena.reset_button.click()
    assert all(h == [] for h in arena.histories.values()) and "no messages yet" in arena.logs["in-context"].value
    arena.play(scenario)                                               # the scripted user plays a whole scenario
    want = scripted_user(G, scenario)
    assert [m["content"] for m in arena.histories["base"] if m["role"] == "user"] == want
    assert "finished" in arena.status.value
    before = arena.scenario
    arena.play_button.click()                                          # a new scenario starts, one user turn
    assert arena.scenario is not before and all(len(h) == 2 for h in arena.histories.values())

def test_compare_and_simulate_over_http(G, scenario):
    "Endpoint agents against a real HTTP server: compare, simulate, evaluate_agents and report end to end."
    echo = lambda req, n: f"reply {n} to: {req['messages'][-1]['content'][:30]}"
    with FakeChatServer(reply=echo) as srv:
        a = Agent(G=G, mode="compiled", base_url=srv.url, endpoint_model="tiny", name="compiled")
        b = Agent(G=G, mode="in-context", base_url=srv.url, endpoint_model="frontier", name="in-context")
        import io
        buf = io.StringIO()
        out = compare({"compiled": a, "in-context": b}, ["Hi!", "Japan please"], file=buf)
        assert "USER: Japan please" in buf.getvalue() and "reply" in buf.getvalue()
        assert [m["content"] for m in out["histories"]["compiled"] if m["role"] == "user"] == ["Hi!", "Japan please"]
        assert out["turns"]["in-context"][0]["prompt_tokens"] > 10 * out["turns"]["compiled"][0]["prompt_tokens"]
        conv = simulate(a, G, scenario)
        assert len(conv["turns"]) == len(turn_plan(G, scenario["path"])) and conv["messages"][0]["content"] == G.graph["agent"]
        assert conv["messages"][1]["content"] == scripted_user(G, scenario)[0]
    # an LLM user (a teacher on its own server) that never sees the flowchart
    with FakeChatServer(reply=lambda req, n: (users.append(req), f"user line {n}")[1]) as usrv, FakeChatServer(reply=echo) as asrv:
        users = []
        ag = Agent(G=G, base_url=asrv.url, endpoint_model="tiny")
        conv = simulate(ag, G, scenario, user=OpenAITeacher("user", base_url=usrv.url, max_retries=0), max_turns=3)
        assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["user line 0", "user line 1", "user line 2"]
        sys_u = users[0]["messages"][0]["content"]
        assert "decisive" in sys_u and all(str(v) in sys_u for v in scenario["slots"].values())
        assert not any(n in sys_u for n in G.nodes if "_" in n)                                  # no node ids,
        assert not any(w in sys_u for *_, w in G.edges(data="when") if w)                          # no conditions,
        assert not any(d.get("say") and d["say"] in sys_u for _, d in G.nodes(data=True))          # no instructions
        assert users[1]["messages"][1:] == [{"role": "assistant", "content": "user line 0"},           # roles flipped: the
                                           {"role": "user", "content": conv["messages"][2]["content"]}]   # agent speaks as `user`

def test_evaluate_agents_and_report(G, scenario, tmp_path):
    import random
    echo = lambda req, n: f"reply {n}"
    def judge_reply(req, n):
        if n == 0: return "not json at all"                                    # one malformed answer: retried
        rng = random.Random(n)
        return json.dumps({k: {"score": rng.randint(2, 5), "reason": "r"} for k in CRITERIA})
    scen = [dict(scenario, id=f"s{i}", seed=i) for i in range(4)]
    with FakeChatServer(reply=echo) as srv, FakeChatServer(reply=judge_reply) as jsrv:
        agents = {n: Agent(G=G, mode=n, base_url=srv.url, endpoint_model="m", name=n) for n in ("base", "compiled", "in-context")}
        res = evaluate_agents(agents, G, scen, judge_teacher=OpenAITeacher("judge", base_url=jsrv.url, max_retries=0),
                              prices={"base": (0.1, 0.1), "compiled": (0.1, 0.1), "in-context": (3, 15)}, progress=False)
    assert res["reference"] == "compiled" and len(res["comparisons"]) == 2 * (len(CRITERIA) + 3)
    cs = res["conversations"]["compiled"]
    assert not any(c["task_success"]["success"] or c["task_success"]["right_end"] for c in cs)  # "reply N": no end
    assert res["summary"]["compiled"]["slot_values"]["stated"] == sum(c["slot_fidelity"]["stated"] for c in cs)
    s = res["summary"]["in-context"]
    for k in CRITERIA:
        x = [c["judgement"]["scores"][k] for c in res["conversations"]["in-context"]]
        assert s[k]["mean"] == pytest.approx(np.mean(x)) and s[k]["ci"][0] <= s[k]["mean"] <= s[k]["ci"][1]
    assert s["failure_rate"] == np.mean([c["judgement"]["scores"]["task_success"] <= 3 for c in res["conversations"]["in-context"]])
    assert res["ratios"]["in-context"]["cost"] > 10 and res["ratios"]["in-context"]["prompt_tokens_per_turn"] > 5
    ps = [c["wilcoxon_p"] for c in res["comparisons"]]
    assert [c["wilcoxon_p_holm"] for c in res["comparisons"]] == pytest.approx(holm(ps))
    rep = report(res, tmp_path / "run")
    for f in ("criteria.png", "adherence.png", "cost.png", "report.md", "report.json"):
        assert (tmp_path / "run" / f).stat().st_size > 0
    assert "| Task Success |" in rep["markdown"] and "Holm p" in rep["markdown"]
    assert "| Slot fidelity (details right) |" in rep["markdown"]
    assert "| Task success (judge-free) | 0.00 [0.00, 0.00] |" in rep["markdown"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["summary"]["compiled"]["n"] == 4

def test_evaluate_endpoint_requests_in_parallel(G):
    "The scripted-user evaluation of an endpoint agent sends each turn of many conversations at once."
    from subterranean.paths import sample_scenarios
    flight, peak, lock = [0], [0], __import__("threading").Lock()
    def reply(req, n):                                  # deterministic per request; counts requests in flight
        with lock: flight[0] += 1; peak[0] = max(peak[0], flight[0])
        time.sleep(0.05)
        with lock: flight[0] -= 1
        return f"Noted: {req['messages'][-1]['content'][-25:]}"
    scs = sample_scenarios(G, 6, seed=5)
    with FakeChatServer(reply=reply) as srv:
        ag = Agent(G=G, base_url=srv.url, endpoint_model="m")
        many = evaluate_agents({"compiled": ag}, G, scs, progress=False)   # an endpoint: 16 at a time by default
        assert peak[0] > 1 and srv.requests == sum(len(scripted_user(G, s)) for s in scs)
        peak[0] = 0
        one = evaluate_agents({"compiled": ag}, G, scs, progress=False, batch_size=1)
        assert peak[0] == 1                                               # batch_size=1: one request at a time
    msgs = lambda r: [c["messages"] for c in r["conversations"]["compiled"]]
    assert msgs(many) == msgs(one) and simulate_many(ag, G, [], 4) == []

def test_local_batched_and_cached_replies_match(G, local, scenario):
    "Batched generation (left-padded) and the reused KV cache give the replies a fresh one-at-a-time run gives."
    m, tok = local
    scs = [dict(scenario, seed=i) for i in range(3)]
    fresh = Agent(m, tok, G, "in-context", max_new_tokens=6, reuse_cache=False)
    cached = Agent(m, tok, G, "in-context", max_new_tokens=6)
    want = [simulate(fresh, G, s)["messages"] for s in scs]
    assert [simulate(cached, G, s)["messages"] for s in scs] == want
    ids, cache = cached.kv
    assert cache.get_seq_length() == len(ids) - 1 and fresh.kv is None
    assert [c["messages"] for c in simulate_many(fresh, G, scs, batch_size=2)] == want

# ---- a real OpenAI-compatible server: `transformers serve` ------------------------------------------------------

def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def test_agent_against_transformers_serve(G, tiny_dir):
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists(): pytest.skip("transformers CLI not installed (pip install 'transformers[serving]')")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([str(exe), "serve", str(tiny_dir), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200: break
            except OSError: time.sleep(0.5)
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        else: pytest.fail("transformers serve did not come up in 60 s")
        url = f"http://127.0.0.1:{port}/v1"
        a = Agent(G=G, base_url=url, endpoint_model=str(tiny_dir), max_new_tokens=8)
        h = [{"role": "user", "content": "Hi!"}]
        r = a.reply(h)
        assert r["completion_tokens"] >= 1 and r["prompt_tokens"] > 3 and r["latency"] > 0 and isinstance(r["text"], str)
        pieces = list(a.stream(h))
        assert len(pieces) >= 1 and "".join(pieces).strip() == a.last["text"] and a.last["completion_tokens"] >= 1
        ctx = Agent(G=G, mode="in-context", base_url=url, endpoint_model=str(tiny_dir), max_new_tokens=4)
        assert ctx.reply(h)["prompt_tokens"] > 10 * r["prompt_tokens"]
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()

"""The OpenAI-compatible teacher and the generator against a real HTTP server on 127.0.0.1 (tests/fakeserver.py):
retries on injected faults, the budget stop, a run killed with SIGKILL and resumed, and the key kept off disk."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeChatServer
from subterranean.generate import (OpenAITeacher, TeacherError, FatalTeacherError, generate_conversations, run_info,
                                   load_cache, cache_key, run_sync, converse, turn_nodes)
from subterranean.workflow import load_workflow, example_path
from subterranean.paths import sample_scenarios

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-DO-NOT-WRITE-ME-1234"

@pytest.fixture(scope="module")
def G(): return load_workflow(ROOT / "workflows" / "travel_booking.yaml")

def teacher(srv, **kw):
    return OpenAITeacher("fake-model", base_url=srv.url, api_key=SECRET, **{"timeout": 0.5, "backoff": 0.01, **kw})

def test_every_fault_is_retried(G):
    faults = ["429", "500", "slow", "badjson", "drop"]
    with FakeChatServer(script=faults, slow=1.5, retry_after=1) as srv:
        t = teacher(srv)
        ds = generate_conversations(G, 2, t, concurrency=1, progress=False)
        calls = sum(r["stats"]["calls"] for r in ds)
        assert len(ds) == 2 and run_info(ds)["failed"] == 0
        assert all(srv.counts[f] == 1 for f in faults)
        assert srv.requests == calls + len(faults) == t.stats["requests"]      # one extra request per fault
        assert {k: v for k, v in t.stats.items() if k.startswith("retry_")} == {
            "retry_429": 1, "retry_5xx": 1, "retry_timeout": 1, "retry_malformed": 1, "retry_connection": 1}
        (t429, _), (t500, _) = srv.log[0], srv.log[1]
        assert t500 - t429 >= 0.95                                             # Retry-After: 1 was honoured
        assert srv.auth == {f"Bearer {SECRET}": srv.requests}                  # the key reached the server...
        for r in ds:                                                           # ...and nothing else
            assert SECRET not in json.dumps(r) and r["turn_nodes"] == turn_nodes(G, r["path"])
            assert r["messages"][0] == {"role": "system", "content": G.graph["agent"]}

def test_retries_give_up_and_fatal_errors_stop(G):
    with FakeChatServer(default="500") as srv:
        t = teacher(srv, max_retries=2)
        with pytest.raises(TeacherError, match="gave up after 3 tries"):
            run_sync(t.chat([{"role": "user", "content": "hi"}]))
        assert srv.requests == 3
        ds = generate_conversations(G, 3, t, concurrency=3, progress=False)
        assert len(ds) == 0 and run_info(ds)["failed"] == 3 and srv.requests == 3 + 3 * 3
    with FakeChatServer(default="401") as srv:
        with pytest.raises(FatalTeacherError, match="AuthenticationError") as e:
            generate_conversations(G, 5, teacher(srv), concurrency=2, progress=False)
        assert SECRET not in str(e.value) and srv.requests <= 2             # no retries, no more conversations

def test_budget_stop_keeps_what_is_done(G, tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeChatServer() as srv:
        full = generate_conversations(G, 6, teacher(srv), seed=3, concurrency=1, progress=False)
        per = [r["stats"]["prompt_tokens"] + r["stats"]["completion_tokens"] for r in full]
        budget = sum(per) // 2                                              # room for about half of them
        ds = generate_conversations(G, 6, teacher(srv), seed=3, concurrency=1, budget_tokens=budget, cache=cache, progress=False)
        info = run_info(ds)
        assert info["budget_stop"] and 1 <= len(ds) < 6 and info["run_tokens"] <= budget
        assert sorted(map(json.dumps, load_cache(cache).values())) == sorted(map(json.dumps, ds))   # what is done is kept
        rest = generate_conversations(G, 6, teacher(srv), seed=3, concurrency=2, cache=cache, progress=False)
        assert len(rest) == 6 and run_info(rest)["from_cache"] == len(ds) and len(cache.read_text().splitlines()) == 6
        usd = generate_conversations(G, 6, teacher(srv), seed=3, concurrency=2, prices=(2.0, 8.0),
                                     budget_usd=0.02, progress=False)
        assert run_info(usd)["budget_stop"] and run_info(usd)["run_usd"] <= 0.02 and len(usd) < 6
        assert SECRET not in cache.read_text()

CHILD = textwrap.dedent("""
    import sys
    from subterranean.generate import OpenAITeacher, generate_conversations
    from subterranean.workflow import load_workflow
    G = load_workflow(sys.argv[1])
    t = OpenAITeacher("fake-model", base_url=sys.argv[2], timeout=5, backoff=0.01)
    generate_conversations(G, int(sys.argv[4]), t, seed=7, concurrency=3, cache=sys.argv[3], progress=False)
    print("finished")
""")

def test_killed_run_resumes_exactly(G, tmp_path):
    n, cache = 12, tmp_path / "cache.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with FakeChatServer(delay=0.03) as srv:
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT / "workflows" / "travel_booking.yaml"), srv.url, str(cache), str(n)],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.time()
        while time.time() - t0 < 60 and (not cache.exists() or len(cache.read_bytes().splitlines()) < 3):
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL); p.wait()
        assert p.returncode == -signal.SIGKILL
        before = load_cache(cache)
        assert 3 <= len(before) < n
        with open(cache, "ab") as f: f.write(b'{"key": "half-written", "row": {"messa')   # as if killed mid-write
        again = SECRET + "-again"      # the rerun's own key: a request of the killed child may still land after the kill
        t = OpenAITeacher("fake-model", base_url=srv.url, api_key=again, timeout=5)
        ds = generate_conversations(G, n, t, seed=7, concurrency=3, cache=cache, progress=False)
        info = run_info(ds)
    assert len(ds) == n and info["from_cache"] == len(before) and info["generated"] == n - len(before)
    new = [r for r in ds if r not in before.values()]
    assert len(new) == n - len(before) and srv.auth[f"Bearer {again}"] == sum(r["stats"]["calls"] for r in new)   # only the missing ones
    lines = cache.read_text().splitlines()
    keys = [json.loads(l)["key"] for l in lines]
    assert len(lines) == n and len(set(keys)) == n                           # none lost, none doubled, half line gone
    scs = sample_scenarios(G, n, seed=7, max_loops=1)
    assert keys and set(keys) == {cache_key(G, s, t.id) for s in scs}
    rows = list(ds)
    assert all(row in rows for row in before.values())                       # finished work kept as it was
    assert SECRET not in cache.read_text()

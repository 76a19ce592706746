"""Generation throughput against a local chat-completions server that takes 200 ms per call.

The server (tests/fakeserver.py) runs in its own process, as a real endpoint would. Prints JSON:
conversations/s with 1, 8 and 32 conversations in flight, and achieved / ideal throughput, where
ideal = in_flight / seconds per conversation (its calls x 200 ms)."""
import json, os, statistics, subprocess, sys, time
from pathlib import Path
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from subterranean.generate import OpenAITeacher, generate_conversations, run_info
from subterranean.workflow import load_workflow

DELAY = 0.2

def bench(G, url, in_flight, waves):
    t = OpenAITeacher("fake-model", base_url=url, timeout=30)
    n = in_flight * waves
    t0 = time.perf_counter()
    ds = generate_conversations(G, n, t, seed=in_flight, concurrency=in_flight, progress=False)
    secs = time.perf_counter() - t0
    calls = [r["stats"]["calls"] for r in ds]
    assert len(ds) == n and t.stats["requests"] == sum(calls), f"every conversation generated once, no retries: {dict(t.stats)} {run_info(ds)}"
    per_conv = statistics.mean(calls) * DELAY              # seconds one conversation takes at 200 ms per call
    ideal, achieved = in_flight / per_conv, n / secs
    return dict(in_flight=in_flight, conversations=n, seconds=round(secs, 2), calls_per_conversation=round(statistics.mean(calls), 2),
                conversations_per_s=round(achieved, 3), ideal_conversations_per_s=round(ideal, 3), ratio=round(achieved / ideal, 3))

if __name__ == "__main__":
    G = load_workflow(ROOT / "workflows" / "travel_booking.yaml")
    srv = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakeserver.py"), str(DELAY)], stdout=subprocess.PIPE, text=True)
    try:
        url = srv.stdout.readline().strip()
        generate_conversations(G, 2, OpenAITeacher("warm-up", base_url=url), progress=False)   # imports, first connection
        rows = [bench(G, url, k, w) for k, w in [(1, 4), (8, 6), (32, 8)]]
    finally: srv.kill(); srv.wait()
    out = {"server_delay_s": DELAY, "workflow": "travel_booking", "runs": rows,
           "ratio_at_32": rows[-1]["ratio"], "ok": rows[-1]["ratio"] >= 0.9}
    print(json.dumps(out, indent=1))
    sys.exit(0 if out["ok"] else 1)

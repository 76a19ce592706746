"""Path counting and enumeration speed, and the memory it takes.

Prints JSON: seconds to load, validate and count the paths of insurance_claims.yaml; the same for a
generated 500-node layered workflow with decision hubs (a DAG with a very large path count, built
with networkx); and tracemalloc peaks while iterating every path of insurance_claims (simple paths,
and paths with loops taken up to twice), read after 10%, 50% and 100% of them, to show that memory
stays flat while the number of paths seen grows."""
import json, sys, time, tracemalloc
from pathlib import Path
import networkx as nx
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from subterranean.paths import acyclic_paths, count_paths, sample_scenarios
from subterranean.workflow import load_workflow, validate_workflow

def layered_workflow(layers=24, width=20, ends=19):
    "A valid 1 + layers*width + ends node DAG: even nodes of a layer are decision hubs (3 branches), odd ones agent steps."
    G = nx.DiGraph(name="layered", description="a generated layered workflow", agent="You are a test agent.",
                   start="route", slots={"x": [1, 2]}, personas=["plain"], format=1)
    node = lambda i, j: f"L{i}_{j}"
    G.add_node("route", type="decision")
    for j in range(width): G.add_edge("route", node(0, j), when=f"topic {j}", user=[f"about topic {j}"])
    for k in range(ends):
        G.add_node(f"end{k}", type="end", outcome=("success", "abandonment", "escalation")[k % 3])
    for i in range(layers):
        for j in range(width):
            n = node(i, j)
            nxt = ([node(i + 1, (j + d) % width) for d in (0, 1, 7)] if i + 1 < layers
                   else [f"end{(j + d) % ends}" for d in (0, 1, 7)])
            if j % 2 == 0:
                G.add_node(n, type="decision")
                for m in nxt: G.add_edge(n, m, when=f"case {m}", user=[f"go to {m}"])
            else:
                G.add_node(n, type="agent", say=f"Step {n}.", examples=[f"This is step {n}, with {{x}}."])
                G.add_edge(n, nxt[1])
    return G

def timed(f, *a):
    t = time.perf_counter(); r = f(*a); return r, round(time.perf_counter() - t, 4)

def flat_memory(G, max_loops):
    "tracemalloc peak (KiB) after 10%, 50% and 100% of the paths, each peak over everything iterated so far."
    total = count_paths(G, max_loops)
    marks = {max(1, total // 10): "10%", max(1, total // 2): "50%", total: "100%"}
    tracemalloc.start(); tracemalloc.reset_peak()
    out, longest = {}, 0
    for i, p in enumerate(acyclic_paths(G, max_loops), 1):
        longest = max(longest, len(p))
        if i in marks: out[marks[i]] = round(tracemalloc.get_traced_memory()[1] / 1024, 1)
    tracemalloc.stop()
    return dict(max_loops=max_loops, paths=total, longest_path=longest, peak_kib=out)

def bench_file(path):
    G, t_load = timed(load_workflow, path)
    _, t_val = timed(validate_workflow, G)
    n, t_count = timed(count_paths, G)
    n1, t_count1 = timed(count_paths, G, 1)
    _, t_enum = timed(lambda: sum(1 for _ in acyclic_paths(G)))
    _, t_sc = timed(sample_scenarios, G, 3000)
    return dict(nodes=len(G), edges=G.number_of_edges(), load_s=t_load, validate_s=t_val, count_s=t_count, paths=n,
                count_loops1_s=t_count1, paths_loops1=n1, enumerate_s=t_enum, sample_3000_s=t_sc)

if __name__ == "__main__":
    ins = ROOT / "workflows" / "insurance_claims.yaml"
    res = {"insurance_claims": bench_file(ins)}
    G, t_build = timed(layered_workflow)
    _, t_val = timed(validate_workflow, G)
    n, t_count = timed(count_paths, G)
    _, t_sc = timed(sample_scenarios, G, 3000)
    res["layered_500"] = dict(nodes=len(G), edges=G.number_of_edges(), hubs=sum(1 for v in G if G.out_degree(v) >= 2),
                              build_s=t_build, validate_s=t_val, count_s=t_count, paths=n, paths_str=f"{n:.3e}",
                              sample_3000_s=t_sc)
    H = load_workflow(ins)
    res["insurance_memory"] = [flat_memory(H, 0), flat_memory(H, 2)]
    print(json.dumps(res, indent=1))

"""Mermaid flowcharts as people write them: every node shape and link form, the realistic flowcharts in
tests/flowcharts/ (imported, drafted offline, generated from), graphs drawn at random and read back from our own
`to_mermaid`, broken flowcharts (a WorkflowError naming the line, never another exception) and bad files."""
import random, re, time
from pathlib import Path
import networkx as nx
import pytest
from subterranean.importers import from_mermaid, import_workflow
from subterranean.workflow import (WorkflowError, OUTCOMES, to_mermaid, validate_workflow,
                                   load_workflow, example_path, save_workflow, MAX_BYTES)
from subterranean.generate import TemplateTeacher, draft_workflow, generate_conversations, run_info, match_node

FLOWS = sorted(p for p in (Path(__file__).parent / "flowcharts").iterdir() if p.suffix in (".mmd", ".md"))
SKELETON_WARNINGS = ("without examples", "without user lines", "no `agent` line")


def test_flowcharts_import_draft_and_generate(tmp_path):
    assert len(FLOWS) >= 5
    for path in FLOWS:
        G, notes = import_workflow(path)
        assert G.graph["name"] and all(n.startswith(str(path)) for n in notes), notes
        assert all(any(w in p for w in SKELETON_WARNINGS) for p in validate_workflow(G)), path
        assert any("outcome" in n and "check it" in n for n in notes)          # every inferred outcome is listed
        D = draft_workflow(G, TemplateTeacher(seed=1), progress=False)
        assert validate_workflow(D) == [], (path, validate_workflow(D))
        assert load_workflow(save_workflow(D, tmp_path / f"{path.stem}.yaml")).graph["name"] == D.graph["name"]
        ds = generate_conversations(D, 24, TemplateTeacher(seed=1), progress=False)
        info = run_info(ds)
        assert len(ds) == 24 and info["dropped"] == 0 and info["failed"] == 0, (path, info)
        said = [(m["content"], n, r) for r in ds for m, n in zip([m for m in r["messages"] if m["role"] == "assistant"], r["turn_nodes"])]
        hits = sum(match_node(t, D)[0] == n for t, n, _ in said)
        assert hits / len(said) >= 0.85, (path, hits / len(said))          # the drafted lines tell the steps apart


def test_what_each_flowchart_means():
    G, _ = import_workflow(FLOWS[[p.name for p in FLOWS].index("support_triage.mmd")])
    assert G.graph["start"] == "B" and "A" not in G                            # the ((Start)) marker gives way to B
    assert G.nodes["C"]["type"] == "decision" and G.edges["C", "F"]["when"] == "Wants to cancel"
    assert G.nodes["H"]["type"] == "tool" and G.nodes["O"]["outcome"] == "escalation" and G.nodes["S"]["outcome"] == "abandonment"
    R, notes = import_workflow(FLOWS[[p.name for p in FLOWS].index("refund.mmd")])
    assert R.graph["name"] == "refund_request" and R.nodes["lookup"]["type"] == "tool"      # front matter title; call x()
    assert R.nodes["lookup_branch"]["type"] == "decision" and R.edges["lookup_branch", "retry"]["when"] == "order not found"
    assert R.nodes["eligible"]["say"] == "Within the 30-day refund window?" and R.nodes["refund"]["type"] == "tool"
    assert {R.nodes[n]["outcome"] for n in ("manager", "lost", "done")} == set(OUTCOMES)
    H, notes = import_workflow(FLOWS[[p.name for p in FLOWS].index("it_helpdesk.mmd")])
    assert any(":1: text before the flowchart ignored" in n for n in notes) and any("'tell' is defined again" in n for n in notes)
    assert H.nodes["tell"]["say"].startswith("Tell them the temporary password") and H.nodes["kind"]["type"] == "decision"
    assert H.nodes["intro"]["say"] == "Hello! This is the IT helpdesk. Ask what the problem is"
    assert H.nodes["gone"]["outcome"] == "abandonment" and H.nodes["bye2"]["outcome"] == "escalation"
    M, _ = import_workflow(FLOWS[[p.name for p in FLOWS].index("returns_policy.md")])
    assert M.graph["name"] == "returns_policy" and M.graph["start"] == "q1" and M.nodes["label"]["type"] == "tool"


LINKS = {"-->": None, "---": None, "-.->": None, "-.-": None, "==>": None, "===": None, "--o": None, "--x": None,
         "---->": None, "-..->": None, "====>": None, "-->|yes|": "yes", '-->|"yes, really"|': "yes, really",
         "-- yes -->": "yes", '-- "yes --> no" -->': "yes --> no", "-. maybe .->": "maybe", "== sure ==>": "sure",
         "-- it is --- ": "it is", "e1@-->": None, '-->|"`**bold** text`"|': "bold text", "-->|a<br>b|": "a b"}

@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("space", [" ", ""])
def test_every_link_form(link, space):
    G = from_mermaid(f"flowchart LR\n  A[Ask it]{space}{link.strip()}{space}B[Do it]\n  B --> C([Done])\n")
    assert list(G.edges) == [("A", "B"), ("B", "C")] and G.edges["A", "B"].get("when") == LINKS[link], link


SHAPES = {"[x]": "agent", "(x)": "agent", "([x])": "agent", "[[x]]": "tool", "[(x)]": "tool", "((x))": "agent",
          "(((x)))": "agent", ">x]": "tool", "{x}": "decision", "{{x}}": "decision", "[/x/]": "agent", "[\\x\\]": "agent",
          "[/x\\]": "agent", "[\\x/]": "agent", '["x"]': "agent", '["`x`"]': "agent", "@{ shape: diamond, label: x }": "decision"}

@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_node_shape(shape):
    text = f"flowchart TD\n  S[Greet] --> N{shape}\n  N -->|one| E1([Done])\n  N -->|two| E2([Gave up])\n"
    G = from_mermaid(text)
    want = SHAPES[shape]
    assert G.nodes["N"]["type"] == want and G.nodes["N"]["say"] == "x", (shape, dict(G.nodes["N"]))
    if want != "decision":                                  # a step with two labelled ways out gets a decision hub
        assert list(G.successors("N")) == ["N_branch"] and G.edges["N_branch", "E2"]["when"] == "two"
    assert G.nodes["E2"]["outcome"] == "abandonment" and G.nodes["E1"]["outcome"] == "success"


def test_syntax_that_is_not_the_flow():
    text = """---
title: "Late orders"
---
%% comment
flowchart TD;A[Ask for the order]-->B{Late?};B-->|yes|C[Apologise] & D[Offer a voucher];B-->|no|E([Done])
    C-->E
    D --> E
    subgraph extra["Extras"]
      direction LR
      D
    end
    classDef warm fill:#fee
    class C,D warm
    style E fill:#eee,stroke:#333
    linkStyle 1,2 stroke:#f00
    click A callback "Open the order"
    accTitle: Late order help
    accDescr { Help a customer
      whose order is late. }
"""
    G = from_mermaid(text)
    assert G.graph["name"] == "late_orders" and G.graph["description"] == "Help a customer whose order is late."
    assert set(G.successors("B")) == {"C", "D", "E"} and G.edges["B", "C"]["when"] == G.edges["B", "D"]["when"] == "yes"
    assert sorted(G) == list("ABCDE")


def test_first_label_wins_with_a_warning():
    notes = []
    G = from_mermaid("flowchart TD\n  A[First] --> B([Done])\n  A[Second]\n  A[First]\n", warnings=notes)
    assert G.nodes["A"]["say"] == "First"
    assert [n for n in notes if "defined again" in n] == ["mermaid:3: node 'A' is defined again with the label 'Second': "
                                                          "the first label, 'First' (line 2), is kept"]


# ---- graphs drawn at random, written by `to_mermaid`, read back ------------------------------------------------
WORDS = ["the", "customer", "wants", "a", "refund", "yes", "no", "order", "late", "voucher", "o", "x", "end", "graph"]
SYMBOLS = ['"', "'", "|", "[", "]", "(", ")", "<", ">", "#", "&", ";", "%%", "`", ":", "-->", "é", "✓", "🙂", "&amp;",
           "#35;", "<br>", "{", "}", "\\", "/", "*", "**x**", "--", "==", "~~~", "@{", ":::"]

def random_text(rng):
    return " ".join(rng.choices(WORDS + SYMBOLS, k=rng.randint(1, 7)))

def random_workflow(rng):
    n, m = rng.randint(2, 16), rng.randint(1, 3)
    ids = rng.sample([f"{p}{i}" for p in ("n", "step", "o", "x", "A", "ask_", "end_") for i in range(40)], n + m)
    steps, finals = ids[:n], ids[n:]
    G = nx.DiGraph(name="random", start=steps[0])
    for i, s in enumerate(steps): G.add_node(s, type=rng.choice(["agent", "tool"] + ["decision"] * (i > 0)))
    for f in finals: G.add_node(f, type="end", outcome=rng.choice(OUTCOMES))
    def link(a, b):
        branch = G.nodes[a]["type"] == "decision" or rng.random() < 0.4
        G.add_edge(a, b, **({"when": random_text(rng)} if branch else {}))
    for i, s in enumerate(steps):
        later = steps[i + 1:] + finals
        k = min(len(later), 2 if G.nodes[s]["type"] == "decision" else rng.choice([1, 1, 2]))
        if k < 2 and G.nodes[s]["type"] == "decision": G.nodes[s]["type"] = "agent"
        for t in rng.sample(later, k): link(s, t)
    for _ in range(rng.randint(0, 2)):                       # a loop back
        j, i = sorted(rng.sample(range(len(steps)), 2), reverse=True) if len(steps) > 1 else (0, 0)
        if j > i and not G.has_edge(steps[j], steps[i]): link(steps[j], steps[i])
    for s in steps + finals:                                 # every node reachable
        if s not in nx.descendants(G, steps[0]) | {steps[0]}:
            link(rng.choice([p for p in steps[:ids.index(s)] if p in nx.descendants(G, steps[0]) | {steps[0]}]), s)
    for s in steps:                                          # a decision has at least two ways out
        if G.nodes[s]["type"] == "decision" and G.out_degree(s) < 2: G.nodes[s]["type"] = "agent"
    for a, b in G.edges:
        if G.nodes[a]["type"] == "decision" and not G.edges[a, b].get("when"): G.edges[a, b]["when"] = random_text(rng)
    validate_workflow(G)
    return G

def test_random_graphs_round_trip():
    rng = random.Random(20261130)
    for k in range(80):
        G = random_workflow(rng)
        text = to_mermaid(G, direction=rng.choice(["TD", "LR"]))
        R = from_mermaid(text)
        assert list(R.nodes) == list(G.nodes) and list(R.edges) == list(G.edges), (k, text)
        assert all(R.nodes[n]["type"] == G.nodes[n]["type"] and R.nodes[n].get("outcome") == G.nodes[n].get("outcome") for n in G)
        assert all(R.edges[e].get("when") == " ".join(G.edges[e]["when"].split()) if G.edges[e].get("when")
                   else "when" not in R.edges[e] for e in G.edges), (k, text)
        assert R.graph["start"] == G.graph["start"]
        validate_workflow(R)


# ---- broken flowcharts: a WorkflowError naming the line, or a workflow that validates -----------------------------
PIECES = ["-->", "---", "-.->", "==>", "--o", "--x", "<-->", "~~~", "|", "[", "]", "(", ")", "{", "}", '"', "`", "&", ";",
          "\n", "%%", ":::", "@{", "subgraph x", "end", "class A tool", "style", "-- t -->", "-. t .->", "== t ==>", "A",
          "B", "x", "o", " ", "#quot;", "<br>", "---\n", "flowchart TD\n", "graph", "((", "))", "{{", ">", "/", "\\"]

def mutate(text, rng):
    for _ in range(rng.randint(1, 6)):
        i, k = rng.randrange(len(text) + 1), rng.random()
        if k < 0.4: text = text[:i] + rng.choice(PIECES) + text[i:]
        elif k < 0.7: text = text[:i] + text[i + rng.randint(1, 8):]
        else: j = rng.randrange(len(text) + 1); text = text[:i] + text[j:j + 20] + text[i:]
    return text

def test_fuzz_broken_flowcharts():
    rng = random.Random(7)
    seeds = [p.read_text() for p in FLOWS if p.suffix == ".mmd"] + [to_mermaid(random_workflow(rng)) for _ in range(5)]
    t0, counts, slowest = time.perf_counter(), {"ok": 0, "error": 0}, 0.0
    while time.perf_counter() - t0 < 4:                      # bounded in time, seeded
        text = mutate(rng.choice(seeds), rng)
        t = time.perf_counter()
        try:
            G = from_mermaid(text, warnings=[])
            validate_workflow(G); counts["ok"] += 1
        except WorkflowError as e:
            assert e.problems and all(re.match(r"mermaid(:\d+)?: \S", p) and "\n" not in p for p in e.problems), e.problems
            counts["error"] += 1
        slowest = max(slowest, time.perf_counter() - t)
    assert counts["ok"] > 50 and counts["error"] > 50 and slowest < 1.0, (counts, slowest)


def test_pathological_inputs_are_fast_and_clean():
    for text in ["flowchart TD\n  A -- " + " " * 20000 + "x\n", "flowchart TD\n  A -- x" + " " * 900 + "y\n", "flowchart TD\n" + "  A[" * 3000, "flowchart TD\n  %%{" * 2000,
                 "flowchart TD\n" + "".join(f"  n{i} --> n{i + 1}\n" for i in range(3000)) + "  n3000 --> e([Done])\n"]:
        t = time.perf_counter()
        try: from_mermaid(text)
        except WorkflowError as e: assert re.match(r"mermaid(:\d+)?: ", str(e))
        assert time.perf_counter() - t < 3


# ---- bad files: one line each, naming the file (and the line) --------------------------------------------------
def test_bad_files(tmp_path):
    (tmp_path / "seq.md").write_text("# x\n\n```mermaid\nsequenceDiagram\n  A->>B: hi\n```\n")
    (tmp_path / "none.md").write_text("# no diagram\n")
    (tmp_path / "empty.mmd").write_text("")
    (tmp_path / "latin1.mmd").write_bytes(b"flowchart TD\n  A[caf\xe9] --> B\n")
    (tmp_path / "loop.mmd").write_text("flowchart TD\n  A --> B\n  B --> C\n  C --> B\n  A --> D([Done])\n")
    (tmp_path / "big.mmd").write_bytes(b"%%" + b"x" * (MAX_BYTES + 1))
    cases = {"missing.mmd": "missing.mmd: no such file", "seq.md": "seq.md:4: a Mermaid sequenceDiagram",
             "none.md": "none.md: no ```mermaid block", "empty.mmd": "empty.mmd: no `flowchart TD`",
             "latin1.mmd": "latin1.mmd: not UTF-8", "loop.mmd": "loop.mmd:2: node 'B': cannot reach an end",
             "big.mmd": "big.mmd: file is larger than", ".": "is a folder"}
    for name, want in cases.items():
        with pytest.raises(WorkflowError) as e: import_workflow(tmp_path / name if name != "." else tmp_path)
        assert want in str(e.value) and "\n" not in str(e.value).split("\n")[0], (name, str(e.value))
        assert len(e.value.problems) >= 1 and all(str(tmp_path) in p for p in e.value.problems)

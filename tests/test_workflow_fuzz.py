"""Bad input: mutated workflow files end in a WorkflowError (or a valid workflow), never any other exception;
`subterranean validate` exits 0/1 with one problem per line on stderr."""
import copy, os, random, re, shutil, subprocess, sys
from pathlib import Path
import pytest, yaml
from subterranean.workflow import (WorkflowError, load_workflow, validate_workflow, example_path, save_workflow,
                                   workflow_prompt, to_mermaid, workflow_hash, MAX_BYTES)
from subterranean.importers import from_mermaid
from subterranean.paths import workflow_summary

NAMES = ["travel_booking", "zoom_support", "insurance_claims"]
SEED = 20261124


@pytest.fixture(scope="module")
def sources():
    return {n: example_path(n).read_bytes() for n in NAMES}


def check(path):
    """Load `path`: a valid workflow or a WorkflowError whose every line names the file. Returns 'ok' or 'error'."""
    try:
        G = load_workflow(path)
    except WorkflowError as e:
        assert e.problems and all(isinstance(p, str) and p.strip() for p in e.problems)
        assert all(str(path) in p for p in e.problems), e.problems
        assert "Traceback" not in str(e) and all("\n" not in p for p in e.problems)
        return "error"
    validate_workflow(G)                          # a loaded workflow is valid: this returns warnings only
    workflow_summary(G); workflow_prompt(G); workflow_hash(G); from_mermaid(to_mermaid(G))
    return "ok"


# ---- structural mutations: parse the file, break one thing, write it back -------------------------------------
BAD_VALUES = [None, 7, 3.5, True, "text", [], ["a", 1], {}, {"x": 1}, [[1]], "{undeclared_slot}"]

def mutate(d, rng):
    d = copy.deepcopy(d)
    nodes = d["nodes"]; ids = list(nodes)
    n = rng.choice(ids); node = nodes[n]
    kind = rng.randrange(14)
    if kind == 0: node.pop(rng.choice(list(node)), None)                             # delete a node field
    elif kind == 1: node[rng.choice(list(node))] = rng.choice(BAD_VALUES)            # mistype a node field
    elif kind == 2: d.pop(rng.choice(list(d)), None)                                 # delete a top-level field
    elif kind == 3: d[rng.choice(list(d))] = rng.choice(BAD_VALUES)                  # mistype a top-level field
    elif kind == 4: node["next"] = [{"to": "no_such_node_%d" % rng.randrange(99), "when": "x"}]   # unknown node id
    elif kind == 5: d["start"] = rng.choice(["nowhere", None, 3, ids[-1]])
    elif kind == 6:                                                                  # a loop with no exit
        a, b = rng.sample([i for i in ids if nodes[i].get("type") != "end"], 2)
        nodes[a]["next"] = [b]; nodes[b]["next"] = [a]
    elif kind == 7: node["type"] = rng.choice(["agnet", "Decision", "", 5, None])
    elif kind == 8: node[rng.choice(["sya", "exampels", "color", "nxt"])] = "x"       # unknown field
    elif kind == 9:                                                                  # break an edge
        nxt = node.get("next")
        if isinstance(nxt, list) and nxt and isinstance(nxt[0], dict):
            e = rng.choice(nxt); k = rng.choice(["to", "when", "user", "whn"])
            if rng.random() < 0.5: e.pop(k, None)
            else: e[k] = rng.choice(BAD_VALUES)
        else: node["next"] = rng.choice(BAD_VALUES)
    elif kind == 10:                                                                 # break a slot spec
        slots = d.get("slots") or {}
        if isinstance(slots, dict) and slots: slots[rng.choice(list(slots))] = rng.choice([{"min": 5, "max": 1}, {"min": "a", "max": 2}, {"choices": []}, {"lo": 1}, [], [None], 4])
    elif kind == 11: node.setdefault("examples", []).append("Hello {%s}" % rng.choice(["nope", "destinaton", "x1"]))
    elif kind == 12: nodes.pop(rng.choice(ids))                                      # delete a whole node
    else:                                                                            # an end node with successors / bad outcome
        ends = [i for i in ids if nodes[i].get("type") == "end"]
        e = rng.choice(ends)
        if rng.random() < 0.5: nodes[e]["next"] = [ids[0]]
        else: nodes[e]["outcome"] = rng.choice(["won", None, 1, "Success"])
    return d


def test_structural_mutations(sources, tmp_path):
    rng, results = random.Random(SEED), {"ok": 0, "error": 0}
    for name, raw in sources.items():
        d = yaml.safe_load(raw)
        for i in range(70):
            p = tmp_path / f"{name}_s{i}.yaml"
            p.write_text(yaml.safe_dump(mutate(d, rng), sort_keys=False, allow_unicode=True))
            results[check(p)] += 1
    assert results["error"] > 150, results      # most mutations break the workflow, and each one is reported


def test_specific_problems_are_named(sources, tmp_path):
    d = yaml.safe_load(sources["travel_booking"])
    d["nodes"]["greet"]["examples"] = "Hi"                         # mistyped
    d["nodes"]["greet"]["next"] = ["trip_request", "ghost"]        # unknown node
    d["nodes"]["trip_request"]["next"][0].pop("when")              # branch without when
    d["nodes"]["booking_confirmed"].pop("outcome")                 # end without outcome
    d["slots"]["nights"] = {"min": 14, "max": 3}                    # bad slot spec
    d["nodes"]["ask_details"]["examples"].append("For {pets} pets?")   # undeclared slot
    d["colour"] = "blue"                                           # unknown top-level field
    p = tmp_path / "travel.yaml"; p.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(WorkflowError) as e: load_workflow(p)
    probs = e.value.problems
    for s in ["node 'greet': examples must be a list of strings", "edge 'greet' -> 'ghost': unknown node 'ghost'",
              "edge 'trip_request' -> 'present_options': a decision branch without `when`",
              "node 'booking_confirmed': end node without an outcome", "slot 'nights': min 14 is larger than max 3",
              "node 'ask_details': placeholder {pets} names no declared slot", "unknown top-level field 'colour'"]:
        assert sum(s in x for x in probs) == 1, (s, probs)
    text = p.read_text().splitlines()
    line = {n: text.index(f"  {n}:") + 1 for n in d["nodes"]}
    for x in probs:                        # node and edge problems name the line of their node; the rest the file
        m = re.match(rf"{re.escape(str(p))}(?::(\d+))?: (?:node|edge) '(\w+)'", x)
        if m: assert m[1] and int(m[1]) == line[m[2]], x
        else: assert x.startswith(f"{p}: "), x


def test_loop_without_exit(sources, tmp_path):
    d = yaml.safe_load(sources["zoom_support"])
    ids = [n for n, v in d["nodes"].items() if v["type"] == "agent"][:2]
    d["nodes"][ids[0]]["next"] = [ids[1]]; d["nodes"][ids[1]]["next"] = [ids[0]]
    p = tmp_path / "loop.yaml"; p.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(WorkflowError) as e: load_workflow(p)
    assert any(f"node '{ids[0]}': cannot reach an end node" in x for x in e.value.problems)


# ---- byte-level mutations --------------------------------------------------------------------------------------
YAML_LINE = re.compile(r":(\d+)(:\d+)?: ")

def expect_one_line(path, needle, line=None):
    with pytest.raises(WorkflowError) as e: load_workflow(path)
    assert len(e.value.problems) == 1 and str(path) in str(e.value) and needle in str(e.value), str(e.value)
    if line is not None: assert f"{path}:{line}:" in str(e.value), str(e.value)
    return str(e.value)


def test_yaml_syntax_errors(sources, tmp_path):
    lines = sources["travel_booking"].decode().splitlines(keepends=True)
    p = tmp_path / "syntax.yaml"
    p.write_text("".join(lines[:20] + ["  broken: [unclosed, list\n"] + lines[20:]))
    msg = expect_one_line(p, "YAML error"); assert YAML_LINE.search(msg)
    p.write_text("".join(lines[:30] + ["\t" + lines[30]] + lines[31:]))                          # a tab
    expect_one_line(p, "a tab", line=31)
    p.write_text("".join(lines[:12] + ['openers: "unterminated\n'] + lines[12:]))
    assert YAML_LINE.search(expect_one_line(p, "YAML error"))
    p.write_text("".join(lines[:5] + [lines[1]] + lines[5:]))                                    # duplicate key
    expect_one_line(p, "duplicate key", line=6)


def test_bad_bytes_and_sizes(sources, tmp_path):
    raw = sources["insurance_claims"]
    p = tmp_path / "latin1.yaml"
    at = raw.index(b"\n", 2000) + 3
    p.write_bytes(raw[:at] + b"\xe9\xff" + raw[at:])
    expect_one_line(p, "not UTF-8", line=raw[:at].count(b"\n") + 1)
    p = tmp_path / "empty.yaml"; p.write_bytes(b""); expect_one_line(p, "empty")
    p.write_bytes(b"  \n\n# only a comment\n"); expect_one_line(p, "empty")
    p.write_bytes(b"- just\n- a list\n"); expect_one_line(p, "must be a mapping")
    p.write_bytes(b"just a string\n"); expect_one_line(p, "must be a mapping")
    p.write_bytes(b"name: x\nnodes: 3\n"); expect_one_line(p, "nodes must be a non-empty mapping")
    p.write_bytes(b"!!python/object:os.system {}\n"); expect_one_line(p, "YAML error")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:                                    # a real 50 MB file: the workflow, repeated
        block = raw + b"\n"
        while f.tell() < 50_000_000: f.write(block)
    assert big.stat().st_size > MAX_BYTES
    expect_one_line(big, "MB")
    expect_one_line(tmp_path / "does_not_exist.yaml", "cannot read")
    expect_one_line(tmp_path, "cannot read")                      # a directory


def test_random_byte_flips_and_line_deletions(sources, tmp_path):
    rng, results = random.Random(SEED), {"ok": 0, "error": 0}
    for name, raw in sources.items():
        lines = raw.split(b"\n")
        for i in range(60):
            b = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.choice([rng.randrange(256), ord(":"), ord("-"), ord("{"), ord("\t"), ord(" "), ord("\n")])
            p = tmp_path / f"{name}_b{i}.yaml"; p.write_bytes(bytes(b)); results[check(p)] += 1
        for i in range(40):
            keep = list(lines)
            for _ in range(rng.randint(1, 3)): keep.pop(rng.randrange(len(keep)))
            if rng.random() < 0.3:
                j = rng.randrange(len(keep)); keep.insert(j, keep[rng.randrange(len(keep))])
            p = tmp_path / f"{name}_l{i}.yaml"; p.write_bytes(b"\n".join(keep)); results[check(p)] += 1
        for i in range(10):                                        # truncated files
            p = tmp_path / f"{name}_t{i}.yaml"; p.write_bytes(raw[:rng.randrange(len(raw))]); results[check(p)] += 1
    assert sum(results.values()) == 330 and results["error"] > 50, results


def test_round_trip_of_examples(sources, tmp_path):
    for name in NAMES:
        G = load_workflow(example_path(name))
        H = load_workflow(save_workflow(G, tmp_path / f"{name}.yaml"))
        assert workflow_hash(G) == workflow_hash(H)
        assert list(G.nodes(data=True)) == list(H.nodes(data=True)) and list(G.edges(data=True)) == list(H.edges(data=True))


# ---- the console script, as a real subprocess ------------------------------------------------------------------
def cli():
    exe = Path(sys.executable).parent / "subterranean"
    if exe.exists(): return [str(exe)]
    if shutil.which("subterranean"): return [shutil.which("subterranean")]
    return [sys.executable, "-c", "import sys; from subterranean.cli import main; sys.exit(main())"]


def run_cli(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(cli() + list(args), capture_output=True, text=True, timeout=120, env=env)


def test_cli_validate_ok():
    files = [str(example_path(n)) for n in NAMES]
    r = run_cli("validate", *files)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == 3 and all(l.startswith(f"ok: {f} (") for l, f in zip(out, files))
    assert "(14 nodes, 3 hubs" in out[0] and "(55 nodes, 6 hubs" in out[2]
    assert all(l.startswith("warning:") for l in r.stderr.splitlines())


def test_cli_validate_invalid(sources, tmp_path):
    d = yaml.safe_load(sources["travel_booking"])
    d["start"] = "hello"; d["nodes"]["greet"]["type"] = "agnet"; d["nodes"]["quote_held"]["outcome"] = "maybe"
    p = tmp_path / "bad.yaml"; p.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(WorkflowError) as e: load_workflow(p)
    r = run_cli("validate", str(p), str(example_path("zoom_support")))
    assert r.returncode == 1
    assert r.stderr.splitlines() == e.value.problems and len(e.value.problems) >= 3   # one problem per line, nothing else
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith("ok: ")] and "zoom_support" in r.stdout
    assert "Traceback" not in r.stderr


def test_cli_yaml_error_names_file_and_line(sources, tmp_path):
    lines = sources["zoom_support"].decode().splitlines(keepends=True)
    p = tmp_path / "tabs.yaml"; p.write_text("".join(lines[:40] + ["\t" + lines[40]] + lines[41:]))
    r = run_cli("validate", str(p))
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"{p}:41:"), r.stderr
    p.write_bytes(sources["zoom_support"][:500] + b"\xc3\x28" + sources["zoom_support"][500:])
    r = run_cli("validate", str(p))
    line = sources["zoom_support"][:500].count(b"\n") + 1
    assert r.returncode == 1 and r.stderr.startswith(f"{p}:{line}: not UTF-8") and len(r.stderr.splitlines()) == 1
    r = run_cli("validate", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "missing.yaml: cannot read" in r.stderr

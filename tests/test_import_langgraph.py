"""A real LangGraph StateGraph (nodes with docstrings, metadata and a prompt chain, a ToolNode, conditional edges with
and without a path map) imported by object and by `file.py:attr` / `module:attr`, validated, drafted offline and
compiled offline with the tiny backend; the pinned CPU set is untouched by langgraph's dependencies."""
import importlib.metadata, sys, textwrap
from pathlib import Path
import pytest

pytest.importorskip("langgraph")
from subterranean.workflow import WorkflowError, validate_workflow, turn_nodes
from subterranean.importers import from_langgraph, import_workflow
from subterranean.generate import TemplateTeacher, draft_workflow, generate_conversations, split_conversations, run_info

ROOT = Path(__file__).resolve().parent.parent

GRAPH = textwrap.dedent('''
    from typing import TypedDict
    from langgraph.graph import StateGraph, START, END
    from langgraph.prebuilt import ToolNode
    from langchain_core.tools import tool
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    class State(TypedDict):
        message: str
        route: str

    @tool
    def lookup_order(order_id: str) -> str:
        "Look up an order by its id."
        return "shipped"

    def greet(state: State):
        """Greet the customer and ask what their order problem is.

        Args: state: the conversation so far."""
        return {}

    def triage(state: State):
        "Work out whether the order is late, damaged or something else."
        return {"route": "late"}

    def apologise(state: State):
        "Apologise for the delay and give the new delivery date."
        return {}

    refund_prompt = ChatPromptTemplate.from_messages([
        ("system", "Offer a refund or a replacement for the damaged {item}."), ("human", "{message}")])
    refund = refund_prompt | RunnableLambda(lambda x: {})

    def handover(state: State): return {}

    builder = StateGraph(State)
    builder.add_node("greet", greet)
    builder.add_node("triage", triage)
    builder.add_node("check_order", ToolNode([lookup_order]))
    builder.add_node("apologise", apologise)
    builder.add_node("refund", refund)
    builder.add_node("handover", handover, metadata={"prompt": "Transfer the customer to a human colleague."})
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "triage")
    builder.add_conditional_edges("triage", lambda s: s["route"],
                                  {"order_is_late": "check_order", "item damaged": "refund", "something else": "handover"})
    builder.add_edge("check_order", "apologise")
    builder.add_conditional_edges("refund", lambda s: "done", ["handover", END])
    builder.add_edge("apologise", END)
    builder.add_edge("handover", END)
    graph = builder.compile()

    def make_graph(): return builder
''')


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("lg")
    (d / "support_graph.py").write_text(GRAPH)
    return d / "support_graph.py"


def check_skeleton(G):
    assert G.graph["start"] == "greet" and G.nodes["greet"]["say"] == "Greet the customer and ask what their order problem is."
    assert G.nodes["triage_branch"]["type"] == "decision" and list(G.successors("triage")) == ["triage_branch"]
    assert {b: e["when"] for _, b, e in G.out_edges("triage_branch", data=True)} == {
        "check_order": "order is late", "refund": "item damaged", "handover": "something else"}
    assert G.nodes["check_order"]["type"] == "tool" and "lookup_order" in G.nodes["check_order"]["say"]
    assert G.nodes["refund"]["say"] == "Offer a refund or a replacement for the damaged item."
    assert G.nodes["handover"]["say"] == "Transfer the customer to a human colleague."
    ends = {n: d["outcome"] for n, d in G.nodes(data=True) if d["type"] == "end"}
    assert ends == {"end": "success", "end_escalation": "escalation"} and list(G.successors("handover")) == ["end_escalation"]
    assert all(any(w in p for w in ("without examples", "without user lines", "no `agent` line")) for p in validate_workflow(G))


def test_from_langgraph_object_and_specs(graph_file, monkeypatch):
    monkeypatch.syspath_prepend(str(graph_file.parent))
    import support_graph
    notes = []
    check_skeleton(from_langgraph(support_graph.graph, name="support", warnings=notes))
    assert any("end 'end_escalation'" in n and "'Transfer'" in n for n in notes)
    check_skeleton(from_langgraph(support_graph.builder))                       # a StateGraph: compiled here
    for spec in (f"{graph_file}:graph", f"{graph_file}:make_graph", "support_graph:graph"):
        G, notes = import_workflow(spec)
        check_skeleton(G)
        assert G.graph["name"] == "support_graph" and all(n.startswith(spec) for n in notes)


def test_bad_specs(graph_file):
    (graph_file.parent / "broken.py").write_text("import langgraph\nraise ImportError('needs an API key')\n")
    (graph_file.parent / "empty_graph.py").write_text(
        "from typing import TypedDict\nfrom langgraph.graph import StateGraph\nclass S(TypedDict):\n    x: int\ng = StateGraph(S)\n")
    cases = {f"{graph_file}:nope": "has no 'nope' (it has: ", f"{graph_file}:State": "expected a LangGraph StateGraph",
             f"{graph_file.parent}/broken.py:graph": "importing", f"{graph_file.parent}/missing.py:graph": "no such file",
             f"{graph_file.parent}/empty_graph.py:g": "LangGraph cannot build this graph: ValueError"}
    for spec, want in cases.items():
        with pytest.raises(WorkflowError) as e: import_workflow(spec)
        assert want in str(e.value) and len(e.value.problems) == 1 and str(e.value).startswith(spec), (spec, str(e.value))


def test_draft_and_compile_offline(graph_file, tmp_path):
    from subterranean.train import CompileConfig, compile_model, load_compiled
    G, _ = import_workflow(f"{graph_file}:graph")
    D = draft_workflow(G, TemplateTeacher(seed=0), progress=False)
    assert validate_workflow(D) == []
    ds = generate_conversations(D, 12, TemplateTeacher(seed=0), progress=False)
    assert len(ds) == 12 and run_info(ds)["dropped"] == 0 and all(r["turn_nodes"] == turn_nodes(D, r["path"]) for r in ds)
    dd = split_conversations(ds, eval_frac=0.2)
    cfg = CompileConfig(backend="tiny", epochs=1, tiny_hidden=64, tiny_layers=2, tiny_vocab=512, batch_size=4,
                        max_seq_length=512, eval_steps=1000, output_dir=str(tmp_path / "compiled"))
    m = compile_model(dd["train"], cfg, eval_ds=dd["eval"], G=D, progress=False)
    assert m["backend"] == "tiny" and m["steps"] >= 1 and m["best_eval_loss"] > 0
    assert any("train_loss" in h for h in m["log_history"]) and (tmp_path / "compiled" / "subterranean_config.json").is_file()
    model, tok = load_compiled(tmp_path / "compiled")
    assert model.num_parameters() > 0 and tok("Hello")["input_ids"]


def test_pinned_cpu_set_is_untouched():
    pins = dict(l.split("==") for l in (ROOT / "constraints-cpu.txt").read_text().splitlines() if "==" in l and not l.startswith("#"))
    got = {k: importlib.metadata.version(k) for k in ("torch", "transformers", "trl", "datasets")}
    assert all(got[k].split("+")[0] == pins[k] for k in got), (got, pins)
    assert importlib.metadata.version("langgraph")

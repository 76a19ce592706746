"""`draft_workflow` against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/fakeserver.py) that writes
JSON answers: an answer that does not parse is asked again with the problem fed back, HTTP faults are retried by
the teacher, the budget stops the asking (the rest is drafted from labels), and a bad key stops the run."""
import json, re, sys, threading
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import FakeChatServer
from subterranean.workflow import validate_workflow, save_workflow, load_workflow
from subterranean.importers import from_mermaid
from subterranean.generate import (OpenAITeacher, TemplateTeacher, FatalTeacherError, draft_workflow, generate_conversations,
                                   run_info)

FLOW = """flowchart TD
    A[Greet the customer and ask for the {order_id}] --> B{Is the order late?}
    B -->|yes| C[Apologise and give the new delivery date]
    B -->|no| D[Explain where the parcel is]
    C & D --> E([Resolved])
    B -->|the customer is angry| F([Transfer to a human agent])
"""


class Drafter:
    "Answers drafting tasks with JSON (the first answer to each task is not JSON at all); records every request."
    def __init__(self, bad_first=True):
        self.seen, self.requests, self.lock, self.bad_first = set(), [], threading.Lock(), bad_first

    def __call__(self, req, n):
        msgs = req["messages"]
        task = next(m["content"] for m in msgs if m["role"] == "user")
        with self.lock:
            self.requests.append(msgs)
            first = task not in self.seen; self.seen.add(task)
        if first and self.bad_first: return "Sure! Here are some great lines for this step."
        if "assistant's setup" in task:
            stand = re.search(r"values for each of these slots: (.*?) \(", task)
            out = {"agent": "You are Robin, the order-help assistant of Parcelly.", "personas": ["curt", "chatty", "worried"],
                   "openers": ["Hi, my order {order_id} has not arrived.", "Hello, where is my parcel?"],
                   "slots": {k: ["PX-1001", "PX-2002", "PX-3003", "PX-4004"] for k in (stand[1].split(", ") if stand else [])}}
            wanted = re.findall(r'"(\w+)": \.\.\.', task)
            return json.dumps({k: v for k, v in out.items() if k in wanted})
        if '"branches"' in task:
            conds = re.findall(r"^(\d+)\. (.+)$", task, re.M)
            return "```json\n" + json.dumps({"branches": {k: [f"Well, {c.lower()}, I'd say.", f"Honestly: {c.lower()}.",
                                                              f"{c.capitalize()}, that's how it is."] for k, c in conds},
                                             "slots": {}}) + "\n```"
        instr = json.loads(re.search(r"Its instruction: (\".*?\")\.\n", task)[1])
        return json.dumps({"say": instr, "examples": [f"Of course: {instr.lower()}.", f"Let me help: {instr.lower()}.",
                                                      f"Right away, {instr.lower()}."], "slots": {}})


def teacher(srv, **kw):
    return OpenAITeacher("fake-model", base_url=srv.url, api_key="sk-test", **{"timeout": 5, "backoff": 0.01, **kw})


def test_draft_with_an_endpoint_retries_bad_answers(tmp_path):
    S = from_mermaid(FLOW, name="late_parcel")
    drafter = Drafter()
    with FakeChatServer(reply=drafter, script=["500", "429"], retry_after=0) as srv:
        t = teacher(srv)
        notes = []
        D = draft_workflow(S, t, concurrency=3, progress=False, warnings=notes)
    assert validate_workflow(D) == [] and not [n for n in notes if "drafted from its label" in n], notes
    tasks = len(drafter.seen)
    assert tasks == 7                                      # setup, A, C, D, E, F, branches of B
    assert len(drafter.requests) == 2 * tasks and srv.requests == 2 * tasks + 2           # + the 500 and the 429
    assert t.stats["retry_5xx"] == 1 and t.stats["retry_429"] == 1
    for msgs in drafter.requests:                          # every second ask carries the bad answer and the problem
        if len(msgs) == 4:
            assert msgs[2] == {"role": "assistant", "content": "Sure! Here are some great lines for this step."}
            assert msgs[3]["content"].startswith("That answer is invalid: not valid JSON")
    assert sum(len(m) == 4 for m in drafter.requests) == tasks
    assert D.graph["agent"] == "You are Robin, the order-help assistant of Parcelly."
    assert D.graph["slots"]["order_id"] == ["PX-1001", "PX-2002", "PX-3003", "PX-4004"]
    assert D.nodes["C"]["examples"][0] == "Of course: apologise and give the new delivery date."
    assert D.edges["B", "F"]["user"][1] == "Honestly: the customer is angry."
    assert "Drafted by openai:fake-model@127.0.0.1" in D.graph["description"]
    again = load_workflow(save_workflow(D, tmp_path / "late_parcel.yaml"))
    ds = generate_conversations(again, 8, TemplateTeacher(seed=0), progress=False)
    assert len(ds) == 8 and run_info(ds)["dropped"] == 0


def test_budget_and_fatal_errors():
    S = from_mermaid(FLOW, name="late_parcel")
    drafter = Drafter(bad_first=False)
    with FakeChatServer(reply=drafter) as srv:
        notes = []
        D = draft_workflow(S, teacher(srv), concurrency=1, budget_tokens=1500, progress=False, warnings=notes)
        spent = srv.requests
    assert 1 <= spent < 7 and validate_workflow(D) == []                      # the rest was drafted from the labels
    assert sum("the budget is spent: drafted from its label instead" in n for n in notes) == 7 - spent
    with FakeChatServer(reply=drafter, default="401") as srv:
        with pytest.raises(FatalTeacherError, match="AuthenticationError"):
            draft_workflow(S, teacher(srv), progress=False)
        assert srv.requests == 1


def test_answers_that_never_parse_fall_back_to_the_labels():
    S = from_mermaid(FLOW, name="late_parcel")
    with FakeChatServer(reply=lambda req, n: "[thinks] I'd rather not answer in JSON.") as srv:
        notes = []
        D = draft_workflow(S, teacher(srv), tries=2, progress=False, warnings=notes)
    assert srv.requests == 2 * 7 and validate_workflow(D) == []
    bad = [n for n in notes if "no valid answer in 2 tries" in n and "drafted from its label instead" in n]
    assert len(bad) == 7 and D.nodes["C"]["examples"] == draft_workflow(S, TemplateTeacher(), progress=False).nodes["C"]["examples"]

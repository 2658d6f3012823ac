"""AppTest of the Distill page's comparison: seeds x arms runs from one launch, short labels with test
top-1 beside them, and the subset / random summary once the runs finish."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TIMEOUT = 300


from app_support import navigation_routing  # noqa: E402, F401  (autouse: every run goes through app.py)


@pytest.fixture
def app(session_store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def test_distill_page_runs_seeds_times_arms_and_summarises(app, session_store):
    at = app.switch_page("pages/subset.py").run()
    at.selectbox(key="subset_method").set_value("random-balanced")
    at.slider(key="subset_ratio").set_value(0.6).run()  # a ratio no other test distils, so the arms are this test's
    at = at.switch_page("pages/distill.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.number_input(key="distill_seeds").value == 3  # the default
    at.selectbox(key="distill_subset").set_value(next(o for o in at.selectbox(key="distill_subset").options
                                                      if "random-balanced" in o and "r0.6" in o))
    at.number_input(key="distill_epochs").set_value(1)
    at.number_input(key="distill_seeds").set_value(2)
    at.number_input(key="distill_seed").set_value(7)
    at.checkbox(key="distill_random").check()
    at.checkbox(key="distill_full").uncheck()
    before = set((session_store.root / "app-runs").glob("*.json")) if (session_store.root / "app-runs").is_dir() else set()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    launched = [json.loads(p.read_text()) for p in set((session_store.root / "app-runs").glob("*.json")) - before]
    assert len(launched) == 4  # 2 seeds x (subset, random)
    seeds = sorted(int(r["command"][r["command"].index("--seed") + 1]) for r in launched)
    assert seeds == [7, 7, 8, 8]
    randoms = [r for r in launched if "random-balanced" not in r["subset"]]
    assert len({r["subset"] for r in randoms}) == 2  # one random subset per seed

    deadline = time.time() + 480
    outs = [Path(r["out"]) for r in launched]
    while not all((out / "metrics.json").is_file() for out in outs) and time.time() < deadline:
        time.sleep(3)
    assert all((out / "metrics.json").is_file() for out in outs), [
        (session_store.root / "app-runs" / f"{out.name}.log").read_text()[-1500:] for out in outs]
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    table = at.dataframe[0].value
    assert list(table.columns[:2]) == ["label", "test_top1"]
    labels = set(table["label"])
    assert {"random-balanced r0.6 s7", "random-balanced r0.6 s8", "random r0.6 s7", "random r0.6 s8"} <= labels
    assert max(len(label) for label in labels if " r0.6 s" in label) < 30

    lines = [m.value for m in at.markdown if "random-balanced r0.6 − random r0.6" in m.value]
    assert lines and "2 paired" in lines[0] and "95% t-interval" in lines[0]
    summary = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                   if any(t.get("name") == "mean ± std" for t in json.loads(c.proto.spec)["data"]))
    bars = next(t for t in summary["data"] if t["name"] == "mean ± std")
    ours = ["random-balanced r0.6", "random r0.6"]  # other tests' runs in the store may add arms of their own
    assert [x.split(" (")[0] for x in bars["x"] if x.split(" (")[0] in ours] == ours
    pairs = next(t for t in summary["data"] if t["name"] == "one seed pair"
                 and t["x"][0].startswith("random-balanced r0.6 − random r0.6"))
    assert len(pairs["y"]) == 2
    arms = at.dataframe[1].value.set_index("arm")
    assert list(arms.loc[ours, "seeds"]) == [2, 2]

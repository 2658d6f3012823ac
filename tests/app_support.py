"""What every AppTest file shares: the app's path and the routing of each run through app.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:  # the app's glue (pages/_studio) imports from the project root
    sys.path.insert(0, str(ROOT))
TIMEOUT = 300  # the first page load trains the digits teacher (seconds alone; minutes on a loaded machine)


@pytest.fixture(autouse=True)
def navigation_routing(monkeypatch):
    """Route every AppTest run through app.py's st.navigation.

    AppTest resets Streamlit's legacy-MPA flag before each run, and because the project has a pages/
    folder the flag comes back on, so a rerun of a page would execute the page file alone (the legacy
    pages/ routing), without app.py and its sidebar. A live server clears the flag for good at the
    first st.navigation call; do the same here. A test module turns it on with
    ``from app_support import navigation_routing  # noqa: F401``.
    """
    from streamlit.runtime import pages_manager

    original = pages_manager.PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False

    monkeypatch.setattr(pages_manager.PagesManager, "__init__", init)


def figures(at) -> list[dict]:
    """The plotly figures an AppTest run drew, as JSON dicts, in page order."""
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def plotly_array(value):
    """A plotly JSON array as float64: a list, or the typed-array form {"dtype", "bdata"} (base64)."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(np.float64)
    return np.asarray(value, dtype=np.float64)

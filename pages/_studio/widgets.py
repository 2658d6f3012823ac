"""Drawing helpers more than one page uses: the policy-shape inputs (the sample gallery is gallery.py)."""
from __future__ import annotations

import streamlit as st

from ifbeta.influence import families

from .state import SHAPE_RANGE


def policy_shape() -> tuple[float, float, float]:
    """Three sliders in a row: alpha, beta (range ``state.SHAPE_RANGE``) and the pruning ratio, on the
    session keys ``teach_alpha``, ``teach_beta`` and ``teach_ratio`` shared by every page that
    previews a policy -> (alpha, beta, ratio)."""
    low, high, step = SHAPE_RANGE
    columns = st.columns(3)
    alpha = columns[0].slider("alpha", low, high, step=step, key="teach_alpha",
                              help="weight on high ranks (u near 1 = most helpful / easiest)")
    beta = columns[1].slider("beta", low, high, step=step, key="teach_beta", help="weight on low ranks")
    ratio = columns[2].slider("Pruning ratio (fraction removed)", 0.05, 0.95, step=0.05, key="teach_ratio")
    return float(alpha), float(beta), float(ratio)


def proxy_family(where=st, *, role: str) -> str:
    """The proxy family selectbox (linear | knn) on the session key ``proxy_family``, which the Influence
    and the Policy page share; ``role`` says in the help what the proxy does on that page -> the family."""
    described = "; ".join(f"{name}: {f.description}" for name, f in families.FAMILIES.items())
    return where.selectbox("Proxy", list(families.FAMILIES), key="proxy_family",
                           help=f"{role} (one choice for both the Influence and the Policy page). {described}")

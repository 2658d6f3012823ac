"""Drawing helpers more than one page uses: the sample gallery and the policy-shape inputs."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ifbeta import pipeline, plots

from .state import SHAPE_RANGE


def gallery(ws: pipeline.Workspace, indices, *, scores_: np.ndarray | None = None, columns: int = 8,
            size: int = 72, limit: int = 64) -> None:
    """Images of pool rows ``indices`` with id, label, teacher prediction and score as captions."""
    indices = [int(i) for i in list(indices)[:limit]]
    if not indices:
        st.caption("no samples")
        return
    names = ws.train.class_names
    predictions = np.asarray(ws.features.logits[indices]).argmax(1)
    images = ws.train.images[indices].numpy()
    for start in range(0, len(indices), columns):
        cells = st.columns(columns)
        for cell, offset in zip(cells, range(start, min(start + columns, len(indices)))):
            i = indices[offset]
            caption = f"{ws.train.ids[i]} · {names[ws.train.labels[i]]}→{names[predictions[offset]]}"
            if scores_ is not None:
                caption += f" · s={scores_[i]:+.2g}"
            cell.image(plots.thumbnail(images[offset], size), caption=caption, width=size, output_format="PNG")


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

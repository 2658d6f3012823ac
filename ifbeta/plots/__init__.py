"""Plotly figure builders for the app: arrays / DataFrames in, ``go.Figure`` out (no streamlit).

Every scatter of samples carries the sample ids in ``customdata`` (one id per point), so a lasso
or box selection maps back to samples through ids, never through point order (plotly numbers
points per trace). Large scatters use ``go.Scattergl`` (WebGL). One module per subject:
``base`` (palette, layout, display helpers), ``scores``, ``maps``, ``selection`` (what a map selection
holds), ``policy``, ``subsets``, ``runs``;
their public names are gathered here, so ``from ifbeta import plots; plots.sample_map(...)`` works.
"""
from __future__ import annotations

from ifbeta.plots.base import (  # noqa: F401
    DISPLAY_LIMIT,
    HELPFUL_SCALE,
    KEPT_COLOUR,
    PALETTE,
    PRUNED_COLOUR,
    beta_density,
    downsample,
    jaccard_matrix,
    quantile_range,
    thumbnail,
)
from ifbeta.plots.maps import PERCENTILE_TITLE, sample_map  # noqa: F401
from ifbeta.plots.policy import (  # noqa: F401
    beta_pdf,
    beta_pdf_animation,
    class_histogram,
    j_at_uniform,
    objective_curves,
    policy_path,
    relative_change,
    teaching_figure,
)
from ifbeta.plots.runs import arm_summary, training_curves  # noqa: F401
from ifbeta.plots.scores import (  # noqa: F401
    CLASS_PERCENTILE_TITLE,
    POOL_PERCENTILE_TITLE,
    SCALES,
    SCORE_TITLE,
    ScoreScale,
    apply_ticks,
    class_counts_bar,
    class_violin,
    confidence_scatter,
    loo_scatter,
    score_histogram,
    score_scale,
    symlog,
    tail_disagreement_bars,
)
from ifbeta.plots.selection import selection_histogram, selection_table  # noqa: F401
from ifbeta.plots.subsets import jaccard_heatmap, kept_pruned_bars  # noqa: F401

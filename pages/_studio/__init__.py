"""The app's glue, one concern a module (pages import ``from pages._studio import ...``):

- ``state``: session_state keys and their defaults (derived from the config dataclasses), routing,
  the sidebar's workspace spec and the configs the pages' widgets describe;
- ``feedback``: engine errors shown on the page, progress bars;
- ``steps``: the pipeline steps behind st caches and the artefact store;
- ``gallery``: the sample gallery (controls, captions, detail dialog) every page shows;
- ``widgets``: drawing helpers shared by pages (the policy-shape inputs);
- ``runs``: background distillation runs.

Nothing here computes: the math is in ``ifbeta``. This folder is not a page (st.navigation lists the
pages explicitly in app.py).
"""

"""The previous implementation of the linear proxy's math (numpy float64), kept only as the reference of
benchmarks/proxy_backend.py: objective.py, proxy.py and solvers.py as they were before the torch port
(imports made relative). Nothing in ifbeta/ imports it."""

"""Selection: `select(method, inputs, ratio)` over an explicit registry; one module per family of rules."""

"""Policy: the Beta sampling policy over influence ranks and the bilevel loop that learns (alpha, beta)."""

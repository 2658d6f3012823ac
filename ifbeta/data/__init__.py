"""Datasets: the explicit registry, stable sample ids, decoding, fingerprints, streamed feature views."""

"""Using a trained run: the Python API (``recommender``), scoring a file (``predict``) and the
HTTP service (``server``, with its request guard and micro-batching)."""

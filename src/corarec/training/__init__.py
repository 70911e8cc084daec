"""Training of the LLM methods: typed settings and presets (``config``), run directories
(``runs``, ``run_format``) and the one loop every method shares (``loop``)."""

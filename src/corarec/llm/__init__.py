"""The frozen language model: loading any Hugging Face causal LM (or the bundled SmolLM2), the
Yes/No answer slot and its score, and the cache of the frozen bottom layers' hidden states."""

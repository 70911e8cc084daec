"""Data: the prepared-dataset format, dataset preparers, prompts and row sampling (the bottom layer: no CF, no LLM)."""

from corarec.data.schema import SPLITS, Dataset, read_dataset, write_dataset

__all__ = ["SPLITS", "Dataset", "read_dataset", "write_dataset"]

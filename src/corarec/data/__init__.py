"""Data: the prepared-dataset format, dataset preparers, prompts and batches."""

from corarec.data.schema import SPLITS, Dataset, read_dataset, write_dataset

__all__ = ["SPLITS", "Dataset", "read_dataset", "write_dataset"]

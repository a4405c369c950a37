"""Stage 1, data: the IDX format (:mod:`.idx`), the datasets and their files (:mod:`.datasets`,
:mod:`.download`), input transforms (:mod:`.transforms`) and the training loader (:mod:`.loader`)."""

from .datasets import DATASETS, DatasetSpec, get_spec, load_split, resolve_data_root

__all__ = ["DATASETS", "DatasetSpec", "get_spec", "load_split", "resolve_data_root"]

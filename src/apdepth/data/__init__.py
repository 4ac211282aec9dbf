"""Datasets: one module per dataset, all returning the same sample dict (see ``apdepth.data.base``).

``get_dataset(name, data_dir, split_file=None)`` is the one way the trainer and the ``eval``
command construct them.
"""

from __future__ import annotations

import importlib
import os

# name -> (module, class); imported lazily so that listing names costs nothing
DATASETS: dict[str, tuple[str, str]] = {
    "nyu": ("apdepth.data.nyu", "NYUDataset"),
    "kitti": ("apdepth.data.kitti", "KITTIDataset"),
    "eth3d": ("apdepth.data.eth3d", "ETH3DDataset"),
    "scannet": ("apdepth.data.scannet", "ScanNetDataset"),
    "diode": ("apdepth.data.diode", "DIODEDataset"),
    "hypersim": ("apdepth.data.hypersim", "HypersimDataset"),
    "vkitti": ("apdepth.data.vkitti", "VKITTIDataset"),
    "synthetic": ("apdepth.data.synthetic", "SyntheticDataset"),
}

# Protocol constants for datasets whose class may not declare them itself.
_DEFAULT_ATTRS = {
    "synthetic": {
        "min_depth": 1e-3,
        "max_depth": 80.0,
        "processing_resolution": 0,
        "alignment_max_res": None,
        "boundary_metrics": True,
    },
}


def get_dataset_class(name: str):
    """The dataset class registered under ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    module_name, cls_name = DATASETS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"dataset {name!r} is not available in this installation ({err})") from err
    return getattr(module, cls_name)


def get_dataset(name: str, data_dir: str | os.PathLike, split_file: str | os.PathLike | None = None, **kwargs):
    """Build dataset ``name`` (nyu, kitti, eth3d, scannet, diode, hypersim, vkitti, synthetic).

    ``data_dir`` is an uncompressed tar or an extracted folder; without ``split_file`` all samples
    found are used. Extra keyword arguments go to the dataset class (e.g. ``transform``).
    The returned object always has ``name``, ``min_depth``/``max_depth`` (metres),
    ``processing_resolution`` (0 = native), ``alignment_max_res`` and ``boundary_metrics``.
    """
    cls = get_dataset_class(name)
    dataset = cls(data_dir, split_file=split_file, **kwargs)
    for attr, value in {"name": name, **_DEFAULT_ATTRS.get(name, {})}.items():
        if not hasattr(dataset, attr):
            setattr(dataset, attr, value)
    for attr, value in (("processing_resolution", 0), ("alignment_max_res", None), ("boundary_metrics", False)):
        if not hasattr(dataset, attr):
            setattr(dataset, attr, value)
    return dataset


__all__ = ["DATASETS", "get_dataset", "get_dataset_class"]

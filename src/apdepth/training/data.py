"""Training batches as a pure function of (seed, step, micro-batch, rank).

Resuming must reproduce the uninterrupted run, so nothing here keeps iteration state: batch ``k``
(= step * grad_accum + micro) of process ``rank`` is built from scratch by :meth:`StepBatches.__getitem__`.

- The dataset of a batch is drawn with the configured probabilities from an RNG seeded by
  (seed, k): the same on every process, one dataset per batch.
- Sample ``j`` of that batch has the global position ``p = (k * world_size + rank) * micro_batch + j``.
  A stored dataset maps ``p`` to an index through a seeded permutation per epoch (each sample once per
  epoch); the synthetic stream renders the scene whose seed is a hash of (seed, dataset, p).
- Crop offsets and flips come from an RNG seeded by (seed, dataset, p).

A ``DataLoader`` over :class:`StepBatches` with ``batch_size=None`` and a sampler starting at the resume
position gives parallel loading (``num_workers``) with the same result as loading in the main process.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from apdepth.training.config import STREAM_NAME, DatasetConfig

_VAL_STREAM_KEY = 7_777_777  # keeps validation scenes disjoint from the training stream's seeds


def sample_seed(*keys: int) -> int:
    """A 32-bit seed hashed from integers (numpy's SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


def render_stream_sample(seed: int, height: int, width: int, scene: str) -> dict:
    """Scene ``seed`` of the procedural renderer as a sample dict (rgb (3,H,W) [0,1], depth m, valid)."""
    from apdepth.data.synthetic import render_scene, to_sample

    return to_sample(render_scene(seed, height, width, scene), f"synthetic_stream/{scene}/{seed:010d}.png")


class StreamValidationSet(Dataset):
    """A fixed set of synthetic scenes (seeds disjoint from training) for validation with ``evaluate``."""

    name = "synthetic_stream"
    min_depth = 1e-3
    max_depth = 80.0
    processing_resolution = 0
    alignment_max_res = None
    boundary_metrics = True

    def __init__(self, num_samples: int, height: int, width: int, scene: str = "mixed", seed: int = 0):
        self.n, self.h, self.w, self.scene, self.seed = int(num_samples), int(height), int(width), scene, int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return render_stream_sample(sample_seed(self.seed, _VAL_STREAM_KEY, i), self.h, self.w, self.scene)


def build_dataset(d: DatasetConfig, seed: int = 0, for_validation: bool = False):
    """A map-style dataset for a stored dataset; ``None`` for the synthetic stream (rendered on demand)
    unless ``for_validation``, which gives a fixed :class:`StreamValidationSet`."""
    if d.name == STREAM_NAME:
        if not for_validation:
            return None
        h, w = d.render_size or d.size
        return StreamValidationSet(d.num_samples, h, w, d.scene, seed)
    from apdepth.data import get_dataset

    return get_dataset(d.name, d.path, d.split_file)


def _fit(sample: dict, size: Sequence[int] | None, mode: str, rng: np.random.Generator) -> dict:
    """Bring a sample to ``size`` = (H, W): random crop (padding with invalid pixels if too small) or resize."""
    if size is None:
        return sample
    th, tw = int(size[0]), int(size[1])
    rgb, depth, valid = sample["rgb"], sample["depth"], sample["valid"]
    h, w = rgb.shape[-2:]
    if (h, w) == (th, tw):
        return sample
    out = dict(sample)
    if mode == "resize":
        out["rgb"] = F.interpolate(rgb[None], size=(th, tw), mode="bilinear", align_corners=False, antialias=True)[
            0
        ].clamp(0, 1)
        # Nearest for depth and mask: interpolating across an occlusion edge would invent depths.
        out["depth"] = F.interpolate(depth[None, None], size=(th, tw), mode="nearest")[0, 0]
        out["valid"] = F.interpolate(valid[None, None].float(), size=(th, tw), mode="nearest")[0, 0] > 0.5
        return out
    ph, pw = max(0, th - h), max(0, tw - w)
    if ph or pw:
        rgb = F.pad(rgb, (0, pw, 0, ph))
        depth = F.pad(depth, (0, pw, 0, ph))
        valid = F.pad(valid, (0, pw, 0, ph))
        h, w = rgb.shape[-2:]
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    out["rgb"] = rgb[:, y : y + th, x : x + tw].contiguous()
    out["depth"] = depth[y : y + th, x : x + tw].contiguous()
    out["valid"] = valid[y : y + th, x : x + tw].contiguous()
    return out


class StepBatches(Dataset):
    """Item ``k`` = the micro-batch ``k`` (= step * grad_accum + micro) of one process, fully assembled.

    Returns ``{"rgb": (B,3,H,W) [0,1], "depth": (B,H,W) metres, "valid": (B,H,W) bool, "dataset": int}``;
    with ``normalize_depth`` also ``depth_norm`` (B,H,W) in [-1,1] (2%/98% quantiles of valid depth ->
    -1/+1) and ``valid`` restricted accordingly.
    """

    def __init__(
        self,
        datasets: Sequence[DatasetConfig],
        micro_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        hflip: float = 0.5,
        normalize_depth: bool = True,
        photometric=None,
        length: int = 2**62,
    ):
        self.cfgs = list(datasets)
        self.micro_batch = int(micro_batch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.hflip = float(hflip)
        self.photometric = photometric
        self.normalize_depth = normalize_depth
        self.length = int(length)
        probs = np.asarray([d.probability for d in self.cfgs], dtype=np.float64)
        self.probs = probs / probs.sum()
        self.datasets = [build_dataset(d) for d in self.cfgs]
        for d, ds in zip(self.cfgs, self.datasets):
            if ds is not None and len(ds) == 0:
                raise ValueError(f"training dataset {d.name!r} at {d.path} has no samples")
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def dataset_for(self, k: int) -> int:
        """Which dataset micro-batch ``k`` is drawn from (the same on every process)."""
        if len(self.cfgs) == 1:
            return 0
        rng = np.random.default_rng(sample_seed(self.seed, 0xDA7A, k))
        return int(rng.choice(len(self.cfgs), p=self.probs))

    def _index(self, d: int, pos: int) -> int:
        n = len(self.datasets[d])
        epoch, offset = divmod(pos, n)
        key = (d, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng(sample_seed(self.seed, d, epoch, 0x5EED)).permutation(n)
        return int(self._perm_cache[key][offset])

    def sample(self, d: int, pos: int) -> dict:
        """Sample ``pos`` of dataset ``d`` (rendered or read, then fitted to its size and maybe flipped); a function of
        (seed, d, pos) only, so any process can compute it."""
        cfg = self.cfgs[d]
        rng = np.random.default_rng(sample_seed(self.seed, d, pos, 0xC0DE))
        if self.datasets[d] is None:
            h, w = cfg.render_size or cfg.size
            sample = render_stream_sample(sample_seed(self.seed, d, pos), h, w, cfg.scene)
        else:
            sample = self.datasets[d][self._index(d, pos)]
        sample = _fit(sample, cfg.size, cfg.resize_mode, rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            from apdepth.data.transforms import hflip

            sample = hflip(sample)
        if self.photometric is not None and self.photometric.probability > 0:
            from apdepth.data.transforms import photometric_augment

            sample = dict(sample, rgb=photometric_augment(sample["rgb"], rng, self.photometric))
        return sample

    def __getitem__(self, k: int) -> dict:
        k = int(k)
        d = self.dataset_for(k)
        base = (k * self.world_size + self.rank) * self.micro_batch
        samples = [self.sample(d, base + j) for j in range(self.micro_batch)]
        shapes = {tuple(s["rgb"].shape) for s in samples}
        if len(shapes) > 1:
            raise ValueError(
                f"dataset {self.cfgs[d].name!r}: samples of different sizes {sorted(shapes)} in one batch; "
                f"set data.datasets.{d}.size: [H, W]"
            )
        batch = {
            "rgb": torch.stack([s["rgb"] for s in samples]).float(),
            "depth": torch.stack([s["depth"] for s in samples]).float(),
            "valid": torch.stack([s["valid"] for s in samples]).bool(),
            "dataset": torch.tensor(d),
        }
        if self.normalize_depth:
            from apdepth.data.transforms import normalize_depth_quantile

            batch["depth_norm"], batch["valid"] = normalize_depth_quantile(batch["depth"], batch["valid"])
        return batch

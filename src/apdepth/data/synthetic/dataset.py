"""Datasets over synthetic scenes: a folder written by ``apdepth synth`` and an on-the-fly stream."""

from __future__ import annotations

import numpy as np
import torch

from .scenes import SCENE_FAMILIES, render_scene


def to_sample(out: dict, rgb_relpath: str) -> dict:
    """Convert a :func:`render` result to the project's sample dict: ``rgb`` float32 (3,H,W) in
    [0,1], ``depth`` float32 (H,W) metres (0 = unknown), ``valid`` bool (H,W), ``rgb_relpath`` str,
    ``intrinsics`` float32 (3,3)."""
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(out["rgb"].transpose(2, 0, 1))).float() / 255.0,
        "depth": torch.from_numpy(np.asarray(out["depth"], np.float32)),
        "valid": torch.from_numpy(np.asarray(out["valid"], bool)),
        "rgb_relpath": rgb_relpath,
        "intrinsics": torch.from_numpy(np.asarray(out["intrinsics"], np.float32)),
    }


class SyntheticDataset(torch.utils.data.Dataset):
    """Reads a folder written by ``apdepth synth`` (layout in docs/synthetic.md).

    With ``split_file`` (a path, absolute or relative to ``root``) the samples are its lines
    ``rgb/<id>.png depth/<id>.(png|npy) [mask/<id>.png]``; without one, every ``rgb/*.png`` is a
    sample and its depth/mask are found by id. Depth PNGs are millimetres, .npy files metres.
    """

    def __init__(self, root, split_file=None):
        from pathlib import Path

        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"synthetic dataset folder not found: {self.root}")
        self.samples: list[tuple[str, str, str | None]] = []
        if split_file is not None:
            sp = Path(split_file)
            sp = sp if sp.is_absolute() or sp.exists() else self.root / sp
            if not sp.is_file():
                raise ValueError(f"split file not found: {split_file}")
            for n, line in enumerate(sp.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise ValueError(f"{sp}:{n}: expected 'rgb depth [mask]' paths, got {line!r}")
                self.samples.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
        else:
            for rgb in sorted((self.root / "rgb").glob("*.png")):
                sid = rgb.stem
                depth = next(
                    (f"depth/{sid}{ext}" for ext in (".png", ".npy") if (self.root / "depth" / f"{sid}{ext}").exists()),
                    None,
                )
                if depth is None:
                    raise ValueError(f"{rgb}: no depth/{sid}.png or depth/{sid}.npy next to it")
                mask = f"mask/{sid}.png" if (self.root / "mask" / f"{sid}.png").exists() else None
                self.samples.append((f"rgb/{sid}.png", depth, mask))
        if not self.samples:
            raise ValueError(f"no samples found in {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        import json

        from PIL import Image

        from apdepth.image_io import read_image

        rgb_p, depth_p, mask_p = self.samples[i]
        rgb = read_image(self.root / rgb_p)
        if depth_p.endswith(".npy"):
            depth = np.load(self.root / depth_p, allow_pickle=False).astype(np.float32)
        else:
            with Image.open(self.root / depth_p) as im:
                depth = np.asarray(im, dtype=np.uint16).astype(np.float32) / 1000.0
        valid = depth > 0
        if mask_p is not None:
            with Image.open(self.root / mask_p) as im:
                valid &= np.asarray(im.convert("L")) > 0
        depth = np.where(valid, depth, 0).astype(np.float32)
        sample = {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "depth": torch.from_numpy(depth),
            "valid": torch.from_numpy(valid),
            "rgb_relpath": rgb_p,
        }
        kfile = self.root / "intrinsics" / (rgb_p.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".json")
        if kfile.exists():
            sample["intrinsics"] = torch.tensor(json.loads(kfile.read_text())["K"], dtype=torch.float32)
        return sample


class SyntheticStream(torch.utils.data.IterableDataset):
    """Renders samples on the fly for training, without touching the disk.

    Global sample ``j`` is scene ``seed + j`` (the same scene as sample ``j`` of a dataset written with
    ``--seed seed``). Samples are dealt round-robin to the ``world_size`` ranks and, within a rank, to the
    DataLoader workers, so no two of them render the same seed. ``length`` (total over all ranks) makes
    the stream finite; ``None`` streams forever.
    """

    def __init__(
        self,
        height: int,
        width: int,
        scene: str = "mixed",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        length: int | None = None,
    ):
        if scene not in SCENE_FAMILIES:
            raise ValueError(f"unknown scene family {scene!r}; choose one of {', '.join(SCENE_FAMILIES)}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if height < 8 or width < 8:
            raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
        if seed < 0 or (length is not None and length < 0):
            raise ValueError("seed and length must be non-negative")
        self.height, self.width, self.scene = int(height), int(width), scene
        self.seed, self.rank, self.world_size, self.length = int(seed), int(rank), int(world_size), length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an infinite SyntheticStream has no length")
        return len(range(self.rank, self.length, self.world_size))

    def seeds(self, worker_id: int = 0, num_workers: int = 1):
        """The scene seeds this rank/worker renders, in order (a generator)."""
        stride = self.world_size * num_workers
        j = self.rank + self.world_size * worker_id
        while self.length is None or j < self.length:
            yield self.seed + j
            j += stride

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for s in self.seeds(wid, nw):
            out = render_scene(s, self.height, self.width, self.scene)
            sample = to_sample(out, f"synthetic/{self.scene}/{s:08d}.png")
            sample["seed"] = s
            yield sample

"""Regenerate tests/golden/bundled.json: a fixed slice of the bundled model's depth for one example image.

Run it (and commit the JSON) whenever the bundled weights in src/apdepth/weights/default/ are replaced on
purpose; tests/test_golden.py then guards the new numbers. The JSON records the weights' SHA-256, so a test
failure says whether the weights or the code changed.

    PYTHONPATH=src python scripts/update_golden.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "bundled.json"
IMAGE = "assets/examples/synthetic_room_a.png"
STEP = 40  # every 40th pixel of the 480x640 map: 12x16 values


def weights_sha256() -> str:
    """One SHA-256 over the bundled model's config and weight files (sorted by path)."""
    from apdepth.pipeline import BUNDLED_MODEL_DIR

    h = hashlib.sha256()
    for path in sorted(
        p for p in BUNDLED_MODEL_DIR.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")
    ):
        h.update(str(path.relative_to(BUNDLED_MODEL_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def bundled_slice() -> list[list[float]]:
    """The bundled model's depth (fp32, CPU, stored processing resolution) of IMAGE at [::STEP, ::STEP]."""
    import torch

    from apdepth.image_io import read_image
    from apdepth.pipeline import ApDepthPipeline

    torch.set_num_threads(1)
    pipe = ApDepthPipeline.from_pretrained()
    depth = pipe(read_image(ROOT / IMAGE)).depth[0]
    return [[round(float(v), 6) for v in row] for row in depth[::STEP, ::STEP]]


def main() -> int:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    record = {"image": IMAGE, "step": STEP, "weights_sha256": weights_sha256(), "depth": bundled_slice()}
    rows = ",\n  ".join(json.dumps(row) for row in record.pop("depth"))  # one image row per line
    head = json.dumps(record, indent=1)[:-2]
    GOLDEN.write_text(f'{head},\n "depth": [\n  {rows}\n ]\n}}\n')
    json.loads(GOLDEN.read_text())  # still valid JSON
    depth = json.loads(GOLDEN.read_text())["depth"]
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({len(depth)}x{len(depth[0])} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Procedural RGB-D scenes with exact ground truth: the project's built-in data source.

Scenes are made of analytic primitives (infinite planes, oriented boxes, spheres, vertical
capped cylinders) and rendered by ray casting in torch on the CPU. Because every pixel's depth
comes from an exact ray/primitive intersection, depth is perfect, including at occlusion edges,
which makes these scenes useful for tests, for training the bundled default model and as a
boundary-quality benchmark.

Conventions
-----------
* World frame: metres, ``+y`` up. Camera frame: OpenCV (``x`` right, ``y`` down, ``z`` forward).
* Depth is *planar z-depth* (distance along the optical axis), not the ray length.
* Intrinsics are pinhole with square pixels; the principal point is the image centre
  ``((W-1)/2, (H-1)/2)`` with pixel ``(u, v)`` centred on integer coordinates, so a camera-frame
  point ``X`` lands on pixel ``K @ X / X_z``.
* Pixels that see the sky or lie beyond the scene's far plane (``max_depth``) are invalid:
  ``valid`` is False and ``depth`` is 0 there.

Everything random comes from a ``numpy.random.Generator`` seeded with the scene seed and from
integer hashing, never from global random state, and the CPU ops used are element-wise or exact
min-reductions, so a seed gives bit-identical images whatever the thread count.

Quick use::

    from apdepth.data.synthetic import render_scene
    s = render_scene(seed=3, height=240, width=320, scene="indoor")
    s["rgb"]        # (240, 320, 3) uint8
    s["depth"]      # (240, 320) float32 metres, 0 where invalid
    s["valid"]      # (240, 320) bool
    s["intrinsics"] # (3, 3) float32

Custom scenes (used by the tests)::

    b = SceneBuilder()
    b.add_plane(point=(0, 0, 5), normal=(0, 0, -1))
    cam = Camera.look_at(eye=(0, 0, 0), target=(0, 0, 1), hfov_deg=60)
    out = render(b.build(), cam, 64, 64)
"""

from .geometry import PATTERNS, Camera, Lighting, Material, Scene, SceneBuilder, SceneSpec
from .render import render
from .scenes import MAX_DEPTH, SCENE_FAMILIES, make_scene, make_scene_spec, render_batch, render_scene

# Importing the package (and drawing scenes: make_scene_spec) needs numpy only; torch comes with the first
# render, scene build or dataset. The datasets are loaded on first access.
_LAZY = {"SyntheticDataset": ".dataset", "SyntheticStream": ".dataset", "to_sample": ".dataset"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_DEPTH",
    "PATTERNS",
    "SCENE_FAMILIES",
    "Camera",
    "Lighting",
    "Material",
    "Scene",
    "SceneBuilder",
    "SceneSpec",
    "SyntheticDataset",
    "SyntheticStream",
    "make_scene",
    "make_scene_spec",
    "render",
    "render_batch",
    "render_scene",
    "to_sample",
]

"""Render a :class:`Scene` seen by a :class:`Camera`: depth, validity and colour per pixel.

torch (and the ray casting and shading built on it) is imported on the first call, so that importing the
package to draw scenes stays torch-free."""

from __future__ import annotations

import numpy as np

from .geometry import Camera, Scene


def render(scene: Scene, camera: Camera, height: int, width: int) -> dict:
    """Render ``scene`` seen by ``camera`` at ``height`` x ``width`` pixels.

    Returns numpy arrays: ``rgb`` (H,W,3) uint8, ``depth`` (H,W) float32 planar z-depth in metres
    (0 where invalid), ``valid`` (H,W) bool (False for sky and beyond ``scene.max_depth``),
    ``intrinsics`` (3,3) float32.
    """
    import torch

    with torch.inference_mode():
        return _render(scene, camera, height, width)


def _render(scene: Scene, camera: Camera, height: int, width: int) -> dict:
    import torch

    from .raycast import _TILE, _bounding_corners, _bounding_spheres, _cast, _dot, _frustum_candidates, _tiles
    from .shading import _post_process, _shade

    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    K = camera.intrinsics(height, width)
    f, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    R = torch.tensor(camera.rotation, dtype=torch.float32)
    eye = torch.tensor(camera.position, dtype=torch.float32)

    _, _, inimg = _tiles(height, width)
    T, S = inimg.shape
    th, tw = -(-height // _TILE), -(-width // _TILE)
    # Unnormalised rays whose camera-z component is 1: the ray parameter t *is* the z-depth. World component
    # k of pixel (v,u) is (x_u * R[k,0] + y_v * R[k,1]) + R[k,2] (the camera z of 1 times R[k,2] is R[k,2]
    # exactly), with x_u = (u - cx) / f and y_v = (v - cy) / f: the same operations per pixel as multiplying
    # the (T,S,3) camera rays by R, but the products are made once per column and row and each component is
    # a contiguous (T,S) array (torch does not vectorise broadcasts over a size-3 last axis), so the bits
    # are the same at a fraction of the cost.
    xs = ((torch.arange(tw * _TILE).float() - cx) / f).reshape(1, tw, 1, _TILE)  # pixel tiles: (row, col, v, u)
    ys = ((torch.arange(th * _TILE).float() - cy) / f).reshape(th, 1, _TILE, 1)
    d3 = torch.stack([(xs * R[k, 0] + ys * R[k, 1]).add_(R[k, 2]).reshape(T, S) for k in range(3)])  # (3,T,S)
    # (T,S,3) rows as well: a row's norm depends on the memory layout, and shading gathers rows
    d = d3.permute(1, 2, 0).contiguous()

    # Tile culling: a primitive can only be hit inside a tile if its bounding sphere lies within
    # the cone spanned by the tile's rays.
    # the scene's bounding geometry, shared by camera and shadow culling
    centers, radii = _bounding_spheres(scene)
    corners = _bounding_corners(scene)
    dnorm = d.norm(dim=-1)
    dn = d / dnorm[..., None]
    axis = dn.mean(dim=1)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half_angle = torch.acos(_dot(dn, axis[:, None]).amin(dim=1).clamp(-1, 1))  # (T,): acos is decreasing
    rel = centers - eye
    dist = rel.norm(dim=-1)
    ang = torch.acos((_dot(axis[:, None], rel[None]) / dist.clamp_min(1e-9)).clamp(-1, 1))  # (T,N)
    reach = torch.asin((radii / dist.clamp_min(1e-9)).clamp(max=1.0))
    cand = (ang <= half_angle[:, None] + reach[None] + 1e-3) | (dist <= radii)[None]
    # tighter for long or flat primitives (kerbs, buildings, table tops) whose bounding spheres are loose
    # and the (tile, primitive) pairs left, against each tile's pyramid and the primitives' outlines
    cand = _frustum_candidates(scene, eye, R, f, cx, cy, height, width, corners, cand)

    # (a (T,S,3) view of the component-first rays: _cast's component-first copy of it is then no copy)
    t, idx = _cast(scene, eye.reshape(1, 1, 3), d3.permute(1, 2, 0), cand, inimg)
    hit = inimg & (idx >= 0)
    valid = hit & (t <= scene.max_depth)
    rgb = _shade(scene, eye, d, t, idx, hit, f, dn, dnorm, bounds=(centers, radii, corners))

    def untile(x):
        x = x.reshape(th, tw, _TILE, _TILE, *x.shape[2:]).transpose(1, 2)
        return x.reshape(th * _TILE, tw * _TILE, *x.shape[4:])[:height, :width]

    depth = torch.where(valid, t, torch.zeros_like(t))
    rgb = untile(rgb)
    rgb = _post_process(rgb, scene.post)
    return {
        "rgb": rgb,
        "depth": untile(depth).numpy().astype(np.float32),
        "valid": untile(valid).numpy(),
        "intrinsics": K,
    }

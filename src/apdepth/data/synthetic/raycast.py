"""Ray/primitive intersection and tiled ray casting against a :class:`Scene` (CPU torch).

The nearest hit of every ray is found with one deterministic scatter-min, so results do not depend
on the thread count."""

from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import Scene

_TILE = 8  # rays are processed in 8x8 screen tiles, the unit of primitive culling
_EPS = 1e-4  # minimum ray parameter, metres along a unit-z ray
_PAIR_CHUNK = 2048  # (tile, primitive) pairs evaluated per step; bounds peak memory


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _g(x, i):
    """Row gather ``x[i]`` for a 1-D index tensor; index_select is much faster than advanced indexing on CPU."""
    return x.index_select(0, i)


def _t_planes(o, d, n, off):
    """o, d: (K,S,3); n (K,1,3); off (K,1). Returns t (K,S), inf on a miss."""
    denom = _dot(d, n)
    t = (off - _dot(o, n)) / torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
    return torch.where((denom.abs() >= 1e-12) & (t > _EPS), t, torch.full_like(t, math.inf))


def _t_boxes(o, d, c, axes, half):
    """Slab test in the box frame. c (K,1,3), axes (K,1,3,3), half (K,1,3)."""
    rel = o - c
    tn = tf = None
    for k in range(3):
        ax = axes[..., k, :]
        ol = _dot(rel, ax)
        dl = _dot(d, ax)
        # a ray parallel to a slab gets a tiny slope instead: its slab interval then becomes
        # (-huge, +huge) when it runs inside the slab and a far-away interval when outside
        inv = 1.0 / torch.where(dl.abs() < 1e-12, torch.full_like(dl, 1e-12), dl)
        t1 = (-half[..., k] - ol) * inv
        t2 = (half[..., k] - ol) * inv
        lo = torch.minimum(t1, t2)
        hi = torch.maximum(t1, t2)
        tn = lo if tn is None else torch.maximum(tn, lo)
        tf = hi if tf is None else torch.minimum(tf, hi)
    t = torch.where(tn > _EPS, tn, tf)
    return torch.where((tn <= tf) & (t > _EPS) & (t < 1e7), t, torch.full_like(t, math.inf))


def _t_spheres(o, d, c, r):
    oc = o - c
    a = _dot(d, d)
    b = _dot(oc, d)
    cc = _dot(oc, oc) - r * r
    disc = b * b - a * cc
    sq = torch.sqrt(disc.clamp_min(0))
    t0 = (-b - sq) / a
    t1 = (-b + sq) / a
    t = torch.where(t0 > _EPS, t0, t1)
    return torch.where((disc >= 0) & (t > _EPS), t, torch.full_like(t, math.inf))


def _t_cylinders(o, d, base, height, r):
    rel = o - base
    inf = torch.full_like(rel[..., 0], math.inf)
    rx, ry, rz = rel[..., 0], rel[..., 1], rel[..., 2]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = dx * dx + dz * dz
    b = rx * dx + rz * dz
    cc = rx * rx + rz * rz - r * r
    disc = b * b - a * cc
    sq = torch.sqrt(disc.clamp_min(0))
    a_safe = torch.where(a < 1e-12, torch.full_like(a, 1e-12), a)
    best = inf
    for sgn in (-1.0, 1.0):
        ts = (-b + sgn * sq) / a_safe
        y = ry + ts * dy
        ok = (disc >= 0) & (a >= 1e-12) & (ts > _EPS) & (y >= 0) & (y <= height)
        best = torch.minimum(best, torch.where(ok, ts, inf))
    dy_safe = torch.where(dy.abs() < 1e-12, torch.full_like(dy, 1e-12), dy)
    for cap in (0.0, 1.0):
        tc = (cap * height - ry) / dy_safe
        px = rx + tc * dx
        pz = rz + tc * dz
        ok = (dy.abs() >= 1e-12) & (tc > _EPS) & (px * px + pz * pz <= r * r)
        best = torch.minimum(best, torch.where(ok, tc, inf))
    return best


def _bounding_spheres(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (N,3) and radii (N,) for all primitives; planes get an infinite radius."""
    npl = len(scene.plane_offset)
    centers = [
        torch.zeros(npl, 3),
        scene.box_center,
        scene.sphere_center,
        scene.cyl_base
        + torch.stack(
            [torch.zeros_like(scene.cyl_height), scene.cyl_height / 2, torch.zeros_like(scene.cyl_height)], -1
        ),
    ]
    radii = [
        torch.full((npl,), math.inf),
        scene.box_half.norm(dim=-1),
        scene.sphere_radius,
        torch.sqrt(scene.cyl_radius**2 + (scene.cyl_height / 2) ** 2),
    ]
    return torch.cat(centers).reshape(-1, 3), torch.cat(radii)


def _bounding_corners(scene: Scene) -> torch.Tensor:
    """Eight corners (Nf,8,3) of a box enclosing each finite primitive (boxes, spheres, cylinders, in
    global index order after the planes): the box itself, a sphere's cube, a cylinder's upright box."""
    signs = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])  # (8,3)
    boxes = scene.box_center[:, None] + torch.einsum("ck,nk,nkj->ncj", signs, scene.box_half, scene.box_axes)
    spheres = scene.sphere_center[:, None] + signs * scene.sphere_radius[:, None, None]
    r, h = scene.cyl_radius[:, None], scene.cyl_height[:, None]
    half = torch.stack([r, h / 2, r], -1)  # (Nc,1,3)
    mid = scene.cyl_base + torch.stack([torch.zeros_like(h[:, 0]), h[:, 0] / 2, torch.zeros_like(h[:, 0])], -1)
    cyls = mid[:, None] + signs * half
    return torch.cat([boxes.reshape(-1, 8, 3), spheres.reshape(-1, 8, 3), cyls.reshape(-1, 8, 3)])


def _frustum_candidates(scene: Scene, eye, rotation, focal, cx, cy, height, width) -> torch.Tensor:
    """(T,N) bool: False where no ray of a screen tile can meet primitive n (a necessary condition only).

    Each tile's rays (from ``eye`` through its pixel centres) fill a pyramid bounded by four planes through
    the eye; a primitive whose enclosing box lies wholly outside one of them cannot be hit by any of those
    rays. The pyramid is widened by one pixel on every side, far beyond float32 rounding of the hit tests,
    so the culling never drops a hit. Planes (infinite) are always candidates.
    """
    th, tw = -(-height // _TILE), -(-width // _TILE)
    npl = len(scene.plane_offset)
    corners = _bounding_corners(scene)
    pc = (corners - eye) @ rotation  # camera frame (x right, y down, z forward): (Nf,8,3)
    X, Y, Z = pc[..., 0:1], pc[..., 1:2], pc[..., 2:3]

    def inside(coord, n_tiles, centre):
        lo = torch.arange(n_tiles, dtype=torch.float32) * _TILE - 1.0  # first pixel of a tile, minus one
        a0 = (lo - centre) / focal
        a1 = (lo + _TILE + 1.0 - centre) / focal  # last pixel plus one
        return ((coord - a0 * Z).amax(dim=1) >= 0) & ((a1 * Z - coord).amax(dim=1) >= 0)  # (Nf, n_tiles)

    okx, oky = inside(X, tw, cx), inside(Y, th, cy)
    fin = (oky.t()[:, None, :] & okx.t()[None, :, :]).reshape(th * tw, -1)  # tile = row * tw + col
    return torch.cat([torch.ones(th * tw, npl, dtype=torch.bool), fin], dim=1)


def _cast(scene: Scene, o, d, cand, active, any_hit_tmax=None):
    """Cast tiled rays against the candidate primitives.

    o, d: (T,S,3) origins and directions (o/d may have S or T of size 1 to broadcast);
    cand: (T,N) bool candidate (tile, primitive) pairs; active: (T,S) bool.
    Returns (t, idx): (T,S) nearest ray parameter (inf on a miss) and global primitive index (-1 on a
    miss; scenes may hold up to 2**20 primitives).
    With ``any_hit_tmax`` (T,S) only a bool "blocked before tmax" map is returned.
    """
    T, S = active.shape
    npl, nb, ns, nc = scene.counts
    offsets = np.cumsum([0, npl, nb, ns, nc])
    cand = cand & active.any(dim=1, keepdim=True)
    pairs = cand.nonzero()  # (K,2) sorted by tile, then primitive
    # Non-negative float32 values order like their bit patterns, so (bits << 20 | primitive) is one
    # int64 key whose minimum gives the nearest hit and, on exact ties, the lowest primitive index:
    # a single order-independent (hence deterministic) scatter-min.
    key = torch.full((T * S,), (0x7F800000 << 20) | 0xFFFFF, dtype=torch.int64)
    for start in range(0, len(pairs), _PAIR_CHUNK):
        pk = pairs[start : start + _PAIR_CHUNK]
        tile, prim = pk[:, 0], pk[:, 1]
        # a shared origin (camera) or direction (sun) stays a size-1 axis: far less work per pair
        ok = _g(o, tile) if o.shape[0] > 1 else o.expand(len(tile), -1, -1)
        dk = _g(d, tile) if d.shape[0] > 1 else d.expand(len(tile), -1, -1)
        tk = torch.full((len(tile), S), math.inf)
        for kind in range(4):
            sel = ((prim >= int(offsets[kind])) & (prim < int(offsets[kind + 1]))).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            j = _g(prim, sel) - int(offsets[kind])
            os_ = _g(ok, sel) if len(sel) < len(tile) else ok
            ds_ = _g(dk, sel) if len(sel) < len(tile) else dk
            if kind == 0:
                tv = _t_planes(os_, ds_, _g(scene.plane_normal, j)[:, None], _g(scene.plane_offset, j)[:, None])
            elif kind == 1:
                tv = _t_boxes(
                    os_,
                    ds_,
                    _g(scene.box_center, j)[:, None],
                    _g(scene.box_axes, j)[:, None],
                    _g(scene.box_half, j)[:, None],
                )
            elif kind == 2:
                tv = _t_spheres(os_, ds_, _g(scene.sphere_center, j)[:, None], _g(scene.sphere_radius, j)[:, None])
            else:
                tv = _t_cylinders(
                    os_,
                    ds_,
                    _g(scene.cyl_base, j)[:, None],
                    _g(scene.cyl_height, j)[:, None],
                    _g(scene.cyl_radius, j)[:, None],
                )
            tk.index_copy_(0, sel, tv.expand(len(sel), S))
        tk = torch.where(_g(active, tile), tk, torch.full_like(tk, math.inf))
        flat = (tile[:, None] * S + torch.arange(S)[None]).reshape(-1)
        kk = (tk.view(torch.int32).to(torch.int64) << 20) | prim[:, None]
        key.scatter_reduce_(0, flat, kk.reshape(-1), reduce="amin")
    t = (key >> 20).to(torch.int32).view(torch.float32).reshape(T, S)
    if any_hit_tmax is not None:
        return t < any_hit_tmax
    idx = torch.where(torch.isfinite(t), (key & 0xFFFFF).reshape(T, S), torch.full((T, S), -1, dtype=torch.int64))
    return t, idx


def _tiles(height: int, width: int):
    """Pixel (v,u) coordinates grouped into _TILE x _TILE tiles: (T,S) int tensors plus an in-image mask."""
    th, tw = -(-height // _TILE), -(-width // _TILE)
    vv = torch.arange(th * _TILE).reshape(th, 1, _TILE, 1).expand(th, tw, _TILE, _TILE)
    uu = torch.arange(tw * _TILE).reshape(1, tw, 1, _TILE).expand(th, tw, _TILE, _TILE)
    v = vv.reshape(th * tw, _TILE * _TILE)
    u = uu.reshape(th * tw, _TILE * _TILE)
    return v, u, (v < height) & (u < width)


def _segment_distance(c, a, b):
    """Distance from points c (1,N,3) to segments a->b (T,1,3); returns (T,N)."""
    ab = b - a
    s = (_dot(c - a, ab) / _dot(ab, ab).clamp_min(1e-12)).clamp(0, 1)
    return (c - a - s[..., None] * ab).norm(dim=-1)

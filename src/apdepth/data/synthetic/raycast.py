"""Ray/primitive intersection and tiled ray casting against a :class:`Scene` (CPU torch).

The nearest hit of every ray is found with one deterministic scatter-min, so results do not depend
on the thread count."""

from __future__ import annotations

import math
import warnings

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


# The hit tests take vectors component-first, ``(3, K, S)`` (or ``(3, K, 1)`` for a value shared by a
# pair's rays), so that every operand of the per-ray arithmetic is a contiguous (K,S) array: torch only
# vectorises element-wise ops over unit-stride data, and slicing (K,S,3) arrays by component is not.
# The arithmetic (and its order) is that of the straightforward formulas, so results are bit-identical.


def _dot3(a, b):
    """Dot product of component-first vectors: ``a[0]*b[0] + a[1]*b[1] + a[2]*b[2]`` (same order as :func:`_dot`)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _safe_(x):
    """``x`` with entries of magnitude below 1e-12 replaced by 1e-12 (a tiny slope instead of a division by 0),
    in place: for a temporary ``x`` (``_safe_(x.clone())`` otherwise)."""
    return x.masked_fill_(x.abs() < 1e-12, 1e-12)


def _t_planes(o, d, n, off):
    """o, d: (3,K,S|1); n (3,K,1) unit normals; off (K,1). Returns t (K,S), inf on a miss."""
    denom = _dot3(d, n)
    parallel = denom.abs() < 1e-12
    t = (off - _dot3(o, n)) / denom.masked_fill_(parallel, 1e-12)  # _safe_(denom), the mask computed once
    return t.masked_fill_(parallel | (t > _EPS).logical_not_(), math.inf)


def _t_boxes(o, d, c, axes, half):
    """Slab test in the box frame. o, d: (3,K,S|1); c (3,K,1); axes (K,3,3) rows = local axes; half (K,3)."""
    rel = o - c
    tn = tf = None
    for k in range(3):
        ax = axes[:, k, :].t()[:, :, None]  # (3,K,1)
        ol = _dot3(rel, ax)
        # a ray parallel to a slab gets a tiny slope instead: its slab interval then becomes
        # (-huge, +huge) when it runs inside the slab and a far-away interval when outside
        inv = _safe_(_dot3(d, ax)).reciprocal_()
        h = half[:, k : k + 1]
        t1 = (-h - ol) * inv
        t2 = (h - ol) * inv
        lo = torch.minimum(t1, t2)
        hi = torch.maximum(t1, t2, out=t2)
        if tn is None:
            tn, tf = lo, hi
        else:
            tn, tf = torch.maximum(tn, lo, out=tn), torch.minimum(tf, hi, out=tf)
    t = torch.where(tn > _EPS, tn, tf)
    return t.masked_fill_(((tn <= tf) & (t > _EPS) & (t < 1e7)).logical_not_(), math.inf)


def _t_spheres(o, d, c, r):
    """o, d: (3,K,S|1); c (3,K,1); r (K,1)."""
    oc = o - c
    a = _dot3(d, d)
    b = _dot3(oc, d)
    cc = _dot3(oc, oc) - r * r
    disc = b * b - a * cc
    sq = torch.sqrt(disc.clamp_min(0))
    t0 = (-b - sq) / a
    t1 = (-b + sq) / a
    t = torch.where(t0 > _EPS, t0, t1)
    return t.masked_fill_(((disc >= 0) & (t > _EPS)).logical_not_(), math.inf)


def _t_cylinders(o, d, base, height, r):
    """o, d: (3,K,S|1); base (3,K,1) centre of the bottom cap; height, r (K,1)."""
    rx, ry, rz = o[0] - base[0], o[1] - base[1], o[2] - base[2]
    dx, dy, dz = d[0], d[1], d[2]
    # (torch.broadcast_shapes would import sympy on first use: half a second per process)
    inf = torch.full((max(rx.shape[0], dx.shape[0]), max(rx.shape[1], dx.shape[1])), math.inf)
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
    dy_safe = _safe_(dy.clone())
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


def _frustum_candidates(
    scene: Scene, eye, rotation, focal, cx, cy, height, width, corners=None, cand=None
) -> torch.Tensor:
    """(T,N) bool: False where no ray of a screen tile can meet primitive n (a necessary condition only).

    Each tile's rays (from ``eye`` through its pixel centres) fill a pyramid bounded by four planes through
    the eye; a primitive whose enclosing box lies wholly outside one of them cannot be hit by any of those
    rays. The pyramid is widened by one pixel on every side, far beyond float32 rounding of the hit tests,
    so the culling never drops a hit. Then, for the (tile, primitive) pairs left, planes through the eye and
    an edge of the enclosing box (:func:`_outline_cull`) with the box on one side and the tile on the other.
    Planes (infinite) are always candidates. ``corners``: the scene's :func:`_bounding_corners` if already
    computed; ``cand``: (T,N) bool candidates from other tests, combined with these (the default: all).
    """
    th, tw = -(-height // _TILE), -(-width // _TILE)
    npl = len(scene.plane_offset)
    corners = _bounding_corners(scene) if corners is None else corners
    pc = (corners - eye) @ rotation  # camera frame (x right, y down, z forward): (Nf,8,3)
    X, Y, Z = pc[..., 0:1], pc[..., 1:2], pc[..., 2:3]

    def bounds(n_tiles, centre):
        """Each tile's widened extent in normalised image coordinates: (a0, a1) per tile, (n_tiles,) each."""
        lo = torch.arange(n_tiles, dtype=torch.float32) * _TILE - 1.0  # first pixel of a tile, minus one
        return (lo - centre) / focal, (lo + _TILE + 1.0 - centre) / focal  # ... and its last pixel plus one

    def inside(coord, a0, a1):
        return ((coord - a0 * Z).amax(dim=1) >= 0) & ((a1 * Z - coord).amax(dim=1) >= 0)  # (Nf, n_tiles)

    (x0, x1), (y0, y1) = bounds(tw, cx), bounds(th, cy)
    okx, oky = inside(X, x0, x1), inside(Y, y0, y1)
    fin = (oky.t()[:, None, :] & okx.t()[None, :, :]).reshape(th * tw, -1)  # tile = row * tw + col
    if cand is not None:
        fin &= cand[:, npl:]
    _outline_cull(pc, fin, (x0, x1, y0, y1), tw)
    planes = torch.ones(th * tw, npl, dtype=torch.bool) if cand is None else cand[:, :npl]
    return torch.cat([planes, fin], dim=1)


# the 12 edges of a box whose corner i has signs (x, y, z) = bits (4, 2, 1) of i (see _bounding_corners)
_BOX_EDGES = [(i, i | b) for b in (1, 2, 4) for i in range(8) if not i & b]


def _outline_cull(pc, fin, rect, tw):
    """Clear ``fin`` (T,Nf) bool in place where a plane through the eye and an edge of primitive f's enclosing
    box separates the box from tile t's rays.

    ``pc`` (Nf,8,3): the boxes' corners in the camera frame (eye at the origin); ``rect``: the tiles' widened
    bounds in normalised image coordinates ``x = X/Z``, ``y = Y/Z``: (x0, x1) per tile column and (y0, y1)
    per tile row. A plane through the eye with normal m has every corner (hence the convex box and the
    primitive inside it) where m.P <= 0, with a tolerance of 1e-6 |m| |P|; a tile's rays eye + t (x, y, 1),
    t > 0, all lie where m.P > 0 when the minimum of m.(x, y, 1) over the tile's rectangle exceeds 1e-3 |m|.
    That leaves an angle of at least ~4e-4 rad between the rays and the primitive (plus the rectangle's pixel
    of widening), far beyond float32 rounding in these tests and in the hit tests, so no hit is dropped. The
    edges on the box's outline as seen from the eye are the ones that can pass; the others fail the
    one-side test. (Tighter than the tile pyramids' planes for boxes seen at an angle: their outlines are
    hexagons, not rectangles.)
    """
    pairs = fin.nonzero()
    if len(pairs) == 0:
        return
    ei = torch.tensor([e[0] for e in _BOX_EDGES])
    ej = torch.tensor([e[1] for e in _BOX_EDGES])
    m = torch.linalg.cross(pc[:, ei], pc[:, ej])  # (Nf,12,3)
    side = torch.einsum("fek,fck->fec", m, pc)  # (Nf,12,8): m . P for every corner
    mnorm = m.norm(dim=-1)
    tol = 1e-6 * mnorm * pc.norm(dim=-1).amax(dim=1)[:, None]
    # orient m so that the box is on its non-positive side; 0 for an edge with corners on both sides
    sgn = torch.where(side.amax(dim=-1) <= tol, 1.0, torch.where(side.amin(dim=-1) >= -tol, -1.0, 0.0))
    m = (m * sgn[..., None]).index_select(0, pairs[:, 1])  # (K,12,3)
    tile = pairs[:, 0]
    x0, x1, y0, y1 = (r.index_select(0, tile % tw if i < 2 else tile // tw)[:, None] for i, r in enumerate(rect))
    mx, my = m[..., 0], m[..., 1]
    low = m[..., 2] + torch.minimum(mx * x0, mx * x1) + torch.minimum(my * y0, my * y1)  # min of m.(x,y,1)
    cull = (low > 1e-3 * mnorm.index_select(0, pairs[:, 1])).any(dim=1)
    fin[tile[cull], pairs[cull, 1]] = False


def _cast(scene: Scene, o, d, cand, active, any_hit_tmax=None):
    """Cast tiled rays against the candidate primitives.

    o, d: (T,S,3) origins and directions (o/d may have S or T of size 1 to broadcast);
    cand: (T,N) bool candidate (tile, primitive) pairs; active: (T,S) bool.
    Returns (t, idx): (T,S) nearest ray parameter (inf on a miss) and global primitive index (-1 on a
    miss; scenes may hold up to 2**20 primitives).
    With ``any_hit_tmax`` (a float) only a (T,S) bool "blocked before that ray parameter" map is returned.
    """
    T, S = active.shape
    npl, nb, ns, nc = scene.counts
    offsets = np.cumsum([0, npl, nb, ns, nc])
    all_active = bool(active.all())
    # (a copy either way: the planes' columns are cleared below)
    cand = cand.clone() if all_active else cand & active.any(dim=1, keepdim=True)
    o3, d3 = o.permute(2, 0, 1).contiguous(), d.permute(2, 0, 1).contiguous()  # (3,T|1,S|1)
    # Planes are infinite: when every tile is a candidate for them (always, for camera rays), they are tested
    # against all rays at once, without per-pair gathers and with a dense minimum instead of a scatter.
    dense_planes = npl > 0 and bool(cand[:, :npl].all())
    if dense_planes:
        cand[:, :npl] = False
    pairs = cand.nonzero()  # (K,2) sorted by tile, then primitive
    params = (
        (scene.plane_normal.t(), scene.plane_offset),
        (scene.box_center.t(), scene.box_axes, scene.box_half),
        (scene.sphere_center.t(), scene.sphere_radius),
        (scene.cyl_base.t(), scene.cyl_height, scene.cyl_radius),
    )
    if any_hit_tmax is not None:
        blocked = torch.zeros(T, S, dtype=torch.bool)
    else:
        # Non-negative float32 values order like their bit patterns, so (bits << 20 | primitive) is one
        # int64 key whose minimum gives the nearest hit and, on exact ties, the lowest primitive index:
        # a single order-independent (hence deterministic) scatter-min.
        key = torch.full((T, S), (0x7F800000 << 20) | 0xFFFFF, dtype=torch.int64)
    if dense_planes:
        od, dd = o3.reshape(3, 1, -1), d3.reshape(3, 1, -1)
        best = None
        for p0 in range(0, npl, 8):  # (8 planes, T*S rays) per step bounds memory
            n = scene.plane_normal[p0 : p0 + 8]
            tv = _t_planes(od, dd, n.t()[:, :, None], scene.plane_offset[p0 : p0 + 8, None]).expand(len(n), T * S)
            if not all_active:
                tv = tv.masked_fill(~active.reshape(1, -1), math.inf)
            if any_hit_tmax is not None:
                blocked.view(-1).logical_or_((tv < any_hit_tmax).any(dim=0))
                continue
            # The nearest plane of each ray in float32, the lowest plane index on exact ties (the rows come in
            # index order and only a strictly nearer one replaces the best): the same (t, plane) as the minimum
            # of their int64 keys, at a fraction of the cost (int64 shifts and ors are not vectorised).
            for r, row in enumerate(tv, start=p0):
                if best is None:
                    best, arg = row, torch.zeros(T * S, dtype=torch.int32)
                else:
                    nearer = row < best
                    best = torch.where(nearer, row, best)
                    arg.masked_fill_(nearer, r)
        if best is not None:
            key = ((best.contiguous().view(torch.int32).to(torch.int64) << 20) | arg).reshape(T, S)
    for start in range(0, len(pairs), _PAIR_CHUNK):
        pk = pairs[start : start + _PAIR_CHUNK]
        for kind in range(4):
            lo, hi = int(offsets[kind]), int(offsets[kind + 1])
            if lo == hi:
                continue
            prim_all = pk[:, 1]
            sel = ((prim_all >= lo) & (prim_all < hi)).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            tile, prim = _g(pk[:, 0], sel), _g(prim_all, sel)
            j = prim - lo
            # a shared origin (camera) or direction (sun) stays a size-1 axis: far less work per pair
            os_ = o3.index_select(1, tile) if o3.shape[1] > 1 else o3
            ds_ = d3.index_select(1, tile) if d3.shape[1] > 1 else d3
            p = [x.index_select(x.dim() - 1 if i == 0 else 0, j) for i, x in enumerate(params[kind])]
            if kind == 0:
                tv = _t_planes(os_, ds_, p[0][:, :, None], p[1][:, None])
            elif kind == 1:
                tv = _t_boxes(os_, ds_, p[0][:, :, None], p[1], p[2])
            elif kind == 2:
                tv = _t_spheres(os_, ds_, p[0][:, :, None], p[1][:, None])
            else:
                tv = _t_cylinders(os_, ds_, p[0][:, :, None], p[1][:, None], p[2][:, None])
            tv = tv.expand(len(sel), S)
            if not all_active:
                tv = torch.where(_g(active, tile), tv, torch.full_like(tv, math.inf))
            # rows of pairs reduced into their tiles' rows: OR (a bool sum) and minimum, both order-independent
            if any_hit_tmax is not None:
                blocked.index_put_((tile,), tv < any_hit_tmax, accumulate=True)
            else:
                kk = (tv.contiguous().view(torch.int32).to(torch.int64) << 20) | prim[:, None]
                with warnings.catch_warnings():  # (index_reduce_ warns once that its API is in beta)
                    warnings.simplefilter("ignore")
                    key.index_reduce_(0, tile, kk, "amin")
    if any_hit_tmax is not None:
        return blocked
    t = (key >> 20).to(torch.int32).view(torch.float32)
    # a miss keeps an infinite t (a hit's t is finite); its index is -1
    idx = (key & 0xFFFFF).masked_fill_(torch.isfinite(t).logical_not_(), -1)
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
    """Distance from points c (N,3) to segments a->b (T,3) and (T,3); returns (T,N).

    Computed component-first ((3,T,N) arrays, contiguous rows). Used for culling only, where it is compared
    with a 1 mm margin: float32 rounding (~1e-4 m at 1e4 m segment lengths) cannot drop a pair that a ray
    can hit."""
    c3, a3 = c.t()[:, None, :], a.t().contiguous()[:, :, None]  # (3,1,N), (3,T,1)
    ab = b.t().contiguous()[:, :, None] - a3
    ca = c3 - a3  # (3,T,N)
    s = (_dot3(ca, ab) / _dot3(ab, ab).clamp_min(1e-12)).clamp_(0, 1)
    r = ca.sub_(s * ab)
    return _dot3(r, r).sqrt_()

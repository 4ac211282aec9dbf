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

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SCENE_FAMILIES = ("indoor", "outdoor", "mixed")
#: Far planes in metres. Outdoor stays below 65.535 m so that depth fits a 16-bit millimetre PNG.
MAX_DEPTH = {"indoor": 20.0, "outdoor": 65.0}

_TILE = 8  # rays are processed in 8x8 screen tiles, the unit of primitive culling
_EPS = 1e-4  # minimum ray parameter, metres along a unit-z ray
_PAIR_CHUNK = 2048  # (tile, primitive) pairs evaluated per step; bounds peak memory

# Pattern ids of the procedural textures.
PATTERNS = ("noise", "stripes", "checker", "wood", "marble", "tiles", "plain")


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------


@dataclass
class Material:
    """Appearance of one primitive. Colours are sRGB in [0, 1]; ``scale`` is the pattern period in
    metres (in the primitive's own frame, so it does not depend on the viewing distance)."""

    color_a: tuple[float, float, float] = (0.7, 0.7, 0.7)
    color_b: tuple[float, float, float] = (0.4, 0.4, 0.4)
    pattern: str = "plain"
    scale: float = 0.5
    direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    grain: float = 0.0  # amplitude of fine multiplicative noise, 0..0.5
    decal_density: float = 0.0  # fraction of decal cells holding a decal, 0..1
    decal_scale: float = 0.5  # decal cell size in metres
    seed: int = 0

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        if not self.scale > 0:
            raise ValueError(f"material scale must be > 0 metres, got {self.scale}")


@dataclass
class Lighting:
    """One light plus ambient. ``kind`` is ``"sun"`` (directional, ``direction`` points towards the
    light) or ``"point"`` (at ``position``, with a soft 1/(1+(d/falloff)^2) fall-off). Colours are linear RGB."""

    kind: str = "sun"
    direction: tuple[float, float, float] = (0.3, 0.8, -0.4)
    position: tuple[float, float, float] = (0.0, 3.0, 0.0)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: tuple[float, float, float] = (0.3, 0.3, 0.3)
    falloff: float = 5.0
    shadows: bool = True


@dataclass
class Scene:
    """Tensors of all primitives (global index order: planes, boxes, spheres, cylinders)."""

    plane_normal: torch.Tensor  # (Np, 3) unit normals
    plane_offset: torch.Tensor  # (Np,) n . x = offset
    box_center: torch.Tensor  # (Nb, 3)
    box_axes: torch.Tensor  # (Nb, 3, 3) rows = the box's local x/y/z axes in world coordinates
    box_half: torch.Tensor  # (Nb, 3) half extents along the local axes
    sphere_center: torch.Tensor  # (Ns, 3)
    sphere_radius: torch.Tensor  # (Ns,)
    cyl_base: torch.Tensor  # (Nc, 3) centre of the bottom cap
    cyl_height: torch.Tensor  # (Nc,)
    cyl_radius: torch.Tensor  # (Nc,)
    casts_shadow: torch.Tensor  # (N,) bool
    materials: list[Material]
    lighting: Lighting = field(default_factory=Lighting)
    sky: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # (horizon, zenith) sRGB
    max_depth: float = 80.0
    post: dict = field(default_factory=dict)  # optional image effects: noise, blur, gain, seed

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return (len(self.plane_offset), len(self.box_half), len(self.sphere_radius), len(self.cyl_radius))


class SceneBuilder:
    """Collect primitives in world coordinates (metres) and build a :class:`Scene`."""

    def __init__(self):
        self._planes: list = []
        self._boxes: list = []
        self._spheres: list = []
        self._cyls: list = []

    def add_plane(self, point, normal, material: Material | None = None, casts_shadow: bool = False):
        n = np.asarray(normal, np.float64)
        if np.linalg.norm(n) == 0:
            raise ValueError("plane normal must be non-zero")
        n = n / np.linalg.norm(n)
        self._planes.append((n, float(n @ np.asarray(point, np.float64)), material or Material(), casts_shadow))
        return self

    def add_box(self, center, size, yaw: float = 0.0, rotation=None, material: Material | None = None,
                casts_shadow: bool = True):
        """``size`` = full extents (x, y, z) in metres; ``yaw`` rotates about +y (radians) unless a full
        3x3 ``rotation`` (columns = local axes in world) is given."""
        size = np.asarray(size, np.float64)
        if size.shape != (3,) or np.any(size <= 0):
            raise ValueError(f"box size must be three positive extents, got {size.tolist()}")
        rot = _yaw_matrix(yaw) if rotation is None else np.asarray(rotation, np.float64)
        self._boxes.append((np.asarray(center, np.float64), rot.T.copy(), size / 2, material or Material(), casts_shadow))
        return self

    def add_sphere(self, center, radius: float, material: Material | None = None, casts_shadow: bool = True):
        if not radius > 0:
            raise ValueError(f"sphere radius must be > 0, got {radius}")
        self._spheres.append((np.asarray(center, np.float64), float(radius), material or Material(), casts_shadow))
        return self

    def add_cylinder(self, base, height: float, radius: float, material: Material | None = None,
                     casts_shadow: bool = True):
        """Vertical capped cylinder standing on ``base`` (centre of its bottom cap)."""
        if not (height > 0 and radius > 0):
            raise ValueError(f"cylinder height and radius must be > 0, got {height}, {radius}")
        self._cyls.append((np.asarray(base, np.float64), float(height), float(radius), material or Material(), casts_shadow))
        return self

    def build(self, lighting: Lighting | None = None, sky=None, max_depth: float = 80.0, post: dict | None = None) -> Scene:
        f = torch.float32

        def t(rows, shape):
            return torch.tensor(np.asarray(rows, np.float64).reshape(shape), dtype=f)

        p, b, s, c = self._planes, self._boxes, self._spheres, self._cyls
        return Scene(
            plane_normal=t([x[0] for x in p], (-1, 3)),
            plane_offset=t([x[1] for x in p], (-1,)),
            box_center=t([x[0] for x in b], (-1, 3)),
            box_axes=t([x[1] for x in b], (-1, 3, 3)),
            box_half=t([x[2] for x in b], (-1, 3)),
            sphere_center=t([x[0] for x in s], (-1, 3)),
            sphere_radius=t([x[1] for x in s], (-1,)),
            cyl_base=t([x[0] for x in c], (-1, 3)),
            cyl_height=t([x[1] for x in c], (-1,)),
            cyl_radius=t([x[2] for x in c], (-1,)),
            casts_shadow=torch.tensor([x[-1] for x in p + b + s + c], dtype=torch.bool),
            materials=[x[-2] for x in p + b + s + c],
            lighting=lighting or Lighting(),
            sky=sky,
            max_depth=float(max_depth),
            post=dict(post or {}),
        )


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Camera:
    """Pinhole camera. ``rotation`` (3x3) maps camera-frame (OpenCV) vectors to world vectors;
    ``hfov_deg`` is the horizontal field of view in degrees (0, 180)."""

    position: tuple[float, float, float]
    rotation: np.ndarray
    hfov_deg: float = 60.0

    def __post_init__(self):
        if not 0 < self.hfov_deg < 180:
            raise ValueError(f"hfov_deg must be in (0, 180), got {self.hfov_deg}")

    @classmethod
    def from_angles(cls, position, yaw: float, pitch: float, roll: float = 0.0, hfov_deg: float = 60.0) -> "Camera":
        """``yaw`` about +y from the +z axis, ``pitch`` up-positive, ``roll`` about the view axis; radians."""
        fwd = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        return cls._from_forward(position, fwd, roll, hfov_deg)

    @classmethod
    def look_at(cls, eye, target, roll: float = 0.0, hfov_deg: float = 60.0) -> "Camera":
        fwd = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
        if np.linalg.norm(fwd) == 0:
            raise ValueError("look_at: eye and target coincide")
        return cls._from_forward(eye, fwd, roll, hfov_deg)

    @classmethod
    def _from_forward(cls, position, fwd, roll, hfov_deg):
        fwd = fwd / np.linalg.norm(fwd)
        up = np.array([0.0, 1.0, 0.0])
        right = np.cross(fwd, up)
        if np.linalg.norm(right) < 1e-8:  # looking straight up or down
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        cr, sr = math.cos(roll), math.sin(roll)
        right, down = cr * right + sr * down, -sr * right + cr * down
        return cls(tuple(float(v) for v in position), np.stack([right, down, fwd], axis=1), hfov_deg)

    def intrinsics(self, height: int, width: int) -> np.ndarray:
        """3x3 float32 K in pixels; principal point at ((W-1)/2, (H-1)/2)."""
        f = (width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)
        return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------


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
    centers = [torch.zeros(npl, 3), scene.box_center, scene.sphere_center,
               scene.cyl_base + torch.stack([torch.zeros_like(scene.cyl_height), scene.cyl_height / 2,
                                             torch.zeros_like(scene.cyl_height)], -1)]
    radii = [torch.full((npl,), math.inf), scene.box_half.norm(dim=-1), scene.sphere_radius,
             torch.sqrt(scene.cyl_radius ** 2 + (scene.cyl_height / 2) ** 2)]
    return torch.cat(centers).reshape(-1, 3), torch.cat(radii)


def _cast(scene: Scene, o, d, cand, active, any_hit_tmax=None):
    """Cast tiled rays against the candidate primitives.

    o, d: (T,S,3) origins and directions (o/d may have S or T of size 1 to broadcast);
    cand: (T,N) bool candidate (tile, primitive) pairs; active: (T,S) bool.
    Returns (t, idx): (T,S) nearest ray parameter (inf on a miss) and global primitive index (-1).
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
        pk = pairs[start:start + _PAIR_CHUNK]
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
                tv = _t_boxes(os_, ds_, _g(scene.box_center, j)[:, None], _g(scene.box_axes, j)[:, None], _g(scene.box_half, j)[:, None])
            elif kind == 2:
                tv = _t_spheres(os_, ds_, _g(scene.sphere_center, j)[:, None], _g(scene.sphere_radius, j)[:, None])
            else:
                tv = _t_cylinders(os_, ds_, _g(scene.cyl_base, j)[:, None], _g(scene.cyl_height, j)[:, None], _g(scene.cyl_radius, j)[:, None])
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
    """Pixel (v,u) coordinates grouped into 16x16 tiles: (T,S) int tensors plus an in-image mask."""
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


@torch.inference_mode()
def render(scene: Scene, camera: Camera, height: int, width: int) -> dict:
    """Render ``scene`` seen by ``camera`` at ``height`` x ``width`` pixels.

    Returns numpy arrays: ``rgb`` (H,W,3) uint8, ``depth`` (H,W) float32 planar z-depth in metres
    (0 where invalid), ``valid`` (H,W) bool (False for sky and beyond ``scene.max_depth``),
    ``intrinsics`` (3,3) float32.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    K = camera.intrinsics(height, width)
    f, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    R = torch.tensor(camera.rotation, dtype=torch.float32)
    eye = torch.tensor(camera.position, dtype=torch.float32)

    v, u, inimg = _tiles(height, width)
    T, S = v.shape
    # Unnormalised rays whose camera-z component is 1: the ray parameter t *is* the z-depth.
    dcam = torch.stack([(u.float() - cx) / f, (v.float() - cy) / f, torch.ones(T, S)], -1)
    d = dcam[..., 0:1] * R[:, 0] + dcam[..., 1:2] * R[:, 1] + dcam[..., 2:3] * R[:, 2]  # (T,S,3)

    # Tile culling: a primitive can only be hit inside a tile if its bounding sphere lies within
    # the cone spanned by the tile's rays.
    centers, radii = _bounding_spheres(scene)
    dn = d / d.norm(dim=-1, keepdim=True)
    axis = dn.mean(dim=1)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half_angle = torch.acos(_dot(dn, axis[:, None]).clamp(-1, 1)).amax(dim=1)  # (T,)
    rel = centers - eye
    dist = rel.norm(dim=-1)
    ang = torch.acos((_dot(axis[:, None], rel[None]) / dist.clamp_min(1e-9)).clamp(-1, 1))  # (T,N)
    reach = torch.asin((radii / dist.clamp_min(1e-9)).clamp(max=1.0))
    cand = (ang <= half_angle[:, None] + reach[None] + 1e-3) | (dist <= radii)[None]

    t, idx = _cast(scene, eye.reshape(1, 1, 3), d, cand, inimg)
    hit = inimg & (idx >= 0)
    valid = hit & (t <= scene.max_depth)
    rgb = _shade(scene, eye, d, t, idx, hit, f, cand_fn=None)

    def untile(x):
        th, tw = -(-height // _TILE), -(-width // _TILE)
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


# ---------------------------------------------------------------------------------------------
# Shading and textures
# ---------------------------------------------------------------------------------------------

_TABLE = None


def _hash_table() -> torch.Tensor:
    # A fixed random table turns lattice hashing into one gather; fixed seed keeps it identical everywhere.
    global _TABLE
    if _TABLE is None:
        _TABLE = torch.from_numpy(np.random.default_rng(20240531).random(_MASK + 1, dtype=np.float32))
    return _TABLE


_P1, _P2, _P3, _P4 = 73856093, 19349663, 83492791, 2654435761
_MASK = (1 << 16) - 1  # a 256 KiB table stays in cache


def _lattice(ix, iy, iz, seed):
    """Hash of integer lattice points (int64 tensors) to floats in [0,1)."""
    return _hash_table().take(((ix * _P1) ^ (iy * _P2) ^ (iz * _P3) ^ (seed * _P4)) & _MASK)


def _value_noise(p, seed):
    """2-D value noise in [0,1]; p (M,2) float, seed (M,) int64.

    The lattice is the 256x256 random table read with wrap-around; each seed translates the
    field by a seed-derived offset, so materials get different noise at the cost of one gather each.
    """
    shift = (seed * 40503) & 0xFFFF
    fl = torch.floor(p)
    fr = p - fl
    w = fr * fr * (3 - 2 * fr)
    i = fl.long()
    x0 = (i[:, 0] + shift) & 255
    y0 = ((i[:, 1] + (shift >> 8)) & 255) << 8
    x1 = (x0 + 1) & 255
    y1 = (y0 + 256) & 0xFF00
    table = _hash_table()
    wx = w[:, 0]
    top = torch.lerp(table.take(y0 | x0), table.take(y0 | x1), wx)
    bot = torch.lerp(table.take(y1 | x0), table.take(y1 | x1), wx)
    return torch.lerp(top, bot, w[:, 1])


def _fbm(p, seed, footprint, octaves=3):
    """Band-limited fractal noise in [0,1] over 2-D points p (M,2): octaves finer than ~2 pixels fade to
    their mean, which keeps distant surfaces from aliasing into salt-and-pepper noise.
    ``footprint`` = pattern units per pixel."""
    total = torch.zeros(len(p))
    norm = 0.0
    amp = 1.0
    freq = 1.0
    inv_fp = 1.0 / footprint.clamp_min(1e-9)
    for o in range(octaves):
        lod = (inv_fp / freq - 1.0).clamp(0, 1)
        n = _value_noise(p * freq + 17.0 * o, seed + 101 * o)
        total = total + amp * (0.5 + lod * (n - 0.5))
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return total / norm


def _srgb_to_linear(c):
    return c.clamp(0, 1) ** 2.2


def _material_table(materials: list[Material]):
    m = materials
    return {
        "a": _srgb_to_linear(torch.tensor([x.color_a for x in m], dtype=torch.float32).reshape(-1, 3)),
        "b": _srgb_to_linear(torch.tensor([x.color_b for x in m], dtype=torch.float32).reshape(-1, 3)),
        "pattern": torch.tensor([PATTERNS.index(x.pattern) for x in m], dtype=torch.int64),
        "scale": torch.tensor([x.scale for x in m], dtype=torch.float32),
        "dir": torch.nn.functional.normalize(torch.tensor([x.direction for x in m], dtype=torch.float32).reshape(-1, 3), dim=-1),
        "grain": torch.tensor([x.grain for x in m], dtype=torch.float32),
        "decal_density": torch.tensor([x.decal_density for x in m], dtype=torch.float32),
        "decal_scale": torch.tensor([x.decal_scale for x in m], dtype=torch.float32),
        "seed": torch.tensor([x.seed % 1000003 for x in m], dtype=torch.int64),
    }


def _surface(scene: Scene, x, d, idx):
    """Normals (M,3, facing the viewer), texture-frame points (M,3) and texture-frame normals (M,3)."""
    npl, nb, ns, nc = scene.counts
    M = len(idx)
    n = torch.zeros(M, 3)
    p = x.clone()
    nl = torch.zeros(M, 3)
    k0, k1, k2, k3 = 0, npl, npl + nb, npl + nb + ns
    sel = (idx < k1).nonzero().squeeze(1)
    if len(sel):
        n.index_copy_(0, sel, scene.plane_normal[_g(idx, sel)])
        nl.index_copy_(0, sel, _g(n, sel))
    sel = ((idx >= k1) & (idx < k2)).nonzero().squeeze(1)
    if len(sel):
        j = _g(idx, sel) - k1
        A = _g(scene.box_axes, j)
        rel = _g(x, sel) - _g(scene.box_center, j)
        loc = torch.stack([_dot(rel, A[:, k]) for k in range(3)], -1)
        q = loc / _g(scene.box_half, j)
        ax = q.abs().argmax(dim=-1)
        sign = torch.sign(q.gather(1, ax[:, None]))
        n.index_copy_(0, sel, sign * A[torch.arange(len(sel)), ax])
        nl.index_copy_(0, sel, torch.nn.functional.one_hot(ax, 3).float() * sign)
        p.index_copy_(0, sel, loc)
    sel = ((idx >= k2) & (idx < k3)).nonzero().squeeze(1)
    if len(sel):
        j = _g(idx, sel) - k2
        rel = _g(x, sel) - _g(scene.sphere_center, j)
        n.index_copy_(0, sel, rel / _g(scene.sphere_radius, j)[:, None])
        nl.index_copy_(0, sel, _g(n, sel))
        p.index_copy_(0, sel, rel)
    sel = (idx >= k3).nonzero().squeeze(1)
    if len(sel):
        j = _g(idx, sel) - k3
        rel = _g(x, sel) - _g(scene.cyl_base, j)
        h, r = _g(scene.cyl_height, j), _g(scene.cyl_radius, j)
        rho = torch.sqrt(rel[:, 0] ** 2 + rel[:, 2] ** 2).clamp_min(1e-9)
        side = (rho - r).abs()
        top = (rel[:, 1] - h).abs()
        bot = rel[:, 1].abs()
        radial = torch.stack([rel[:, 0] / rho, torch.zeros_like(rho), rel[:, 2] / rho], -1)
        up = torch.tensor([0.0, 1.0, 0.0]).expand(len(sel), 3)
        nn_ = torch.where((side <= torch.minimum(top, bot))[:, None], radial,
                          torch.where((top < bot)[:, None], up, -up))
        n.index_copy_(0, sel, nn_)
        nl.index_copy_(0, sel, nn_)
        p.index_copy_(0, sel, rel)
    n = torch.nn.functional.normalize(n, dim=-1)
    n = torch.where((_dot(n, d) > 0)[:, None], -n, n)
    return n, p, nl


def _albedo(mt, idx, p, nl, footprint):
    """Linear-RGB albedo (M,3) from the procedural material of each hit."""
    M = len(idx)
    scale = _g(mt["scale"], idx)
    seed = _g(mt["seed"], idx)
    q = p / scale[:, None]
    fp = footprint / scale  # pattern units per pixel
    pat = _g(mt["pattern"], idx)
    direc = _g(mt["dir"], idx)
    val = torch.zeros(M)
    # the two coordinates spanning the surface, for flat 2-D patterns (tiles, checkers)
    ax = nl.abs().argmax(dim=-1)
    u2 = torch.where(ax == 0, q[:, 2], q[:, 0])
    v2 = torch.where(ax == 1, q[:, 2], q[:, 1])
    uv = torch.stack([u2, v2], -1)
    base_lod = (0.5 / fp.clamp_min(1e-9) - 1.0).clamp(0, 1)
    for pid, name in enumerate(PATTERNS):
        sel = (pat == pid).nonzero().squeeze(1)
        if len(sel) == 0 or name == "plain":
            continue
        qs, ss, fs, ds, lod, uvs = _g(q, sel), _g(seed, sel), _g(fp, sel), _g(direc, sel), _g(base_lod, sel), _g(uv, sel)
        if name == "noise":
            v = _fbm(uvs, ss, fs, 4)
            v = ((v - 0.5) * 2.2 + 0.5).clamp(0, 1)
        elif name == "stripes":
            s = _dot(qs, ds) + 0.25 * _fbm(uvs * 0.5, ss, fs * 0.5, 2)
            v = 0.5 + lod * 0.5 * torch.sign(torch.sin(2 * math.pi * s))
        elif name == "checker":
            c = (torch.floor(_g(u2, sel)) + torch.floor(_g(v2, sel))).remainder(2)
            v = 0.5 + lod * (c - 0.5)
        elif name == "wood":
            rel = qs - _dot(qs, ds)[:, None] * ds
            r = rel.norm(dim=-1) * 3.0 + 1.5 * _fbm(uvs * 0.7, ss, fs * 0.7, 2)
            v = 0.5 + lod * ((r - torch.floor(r)) ** 3 - 0.5)
        elif name == "marble":
            s = _dot(qs, ds) * 2.0 + 3.0 * _fbm(uvs, ss, fs, 3)
            v = 0.5 + lod * (torch.abs(torch.sin(math.pi * s)) ** 0.35 - 0.5)
        else:  # tiles / bricks: running bond with mortar lines
            uu, vv = _g(u2, sel), _g(v2, sel) * 2.0
            row = torch.floor(vv)
            uu = uu + 0.5 * row.remainder(2)
            fu, fv = uu - torch.floor(uu), vv - row
            mortar = (torch.minimum(fu, 1 - fu) < 0.04) | (torch.minimum(fv, 1 - fv) < 0.08)
            jitter = _lattice(torch.floor(uu).long(), row.long(), torch.zeros_like(row).long(), ss)
            v = torch.where(mortar, torch.ones_like(uu), 0.25 * jitter)
            v = 0.5 + lod * (v - 0.5)
        val.index_copy_(0, sel, v)
    alb = _g(mt["a"], idx) + (_g(mt["b"], idx) - _g(mt["a"], idx)) * val[:, None]
    grain = _g(mt["grain"], idx)
    gsel = (grain > 0).nonzero().squeeze(1)
    if len(gsel):
        gn = _fbm(_g(uv, gsel) * 4.0, _g(seed, gsel) + 7, _g(fp, gsel) * 4.0, 1)
        alb.index_copy_(0, gsel, _g(alb, gsel) * (1.0 + _g(grain, gsel)[:, None] * 2.0 * (gn[:, None] - 0.5)))
    # decals: sparse discs/squares of random colour on a jittered cell grid, sized in metres
    dens = _g(mt["decal_density"], idx)
    dsel = (dens > 0).nonzero().squeeze(1)
    if len(dsel):
        ds = _g(mt["decal_scale"], idx)[dsel]
        pc = _g(p, dsel) / ds[:, None]
        cell = torch.floor(pc).long()
        cell_hash = (cell[:, 0] * _P1) ^ (cell[:, 1] * _P2) ^ (cell[:, 2] * _P3)
        sd = _g(seed, dsel) + 31
        table = _hash_table()

        def rnd(k):
            return table.take((cell_hash ^ ((sd + k) * _P4)) & _MASK)

        h = rnd(0)
        fr = pc - torch.floor(pc) - 0.5
        rad = 0.15 + 0.25 * rnd(1)
        square = rnd(2) < 0.5
        dist = torch.where(square, fr.abs().amax(dim=-1), fr.norm(dim=-1))
        on = (h < _g(dens, dsel)) & (dist < rad) & ((_g(footprint, dsel) / ds) < 0.5)
        col = torch.stack([rnd(3 + k) for k in range(3)], -1)
        alb.index_copy_(0, dsel, torch.where(on[:, None], col ** 2.2 * 0.9 + 0.02, _g(alb, dsel)))
    return alb.clamp(0, 1)


def _shade(scene: Scene, eye, d, t, idx, hit, focal, cand_fn=None):
    """Linear shading -> sRGB float (T,S,3) in [0,1]."""
    T, S = t.shape
    out = torch.zeros(T, S, 3)
    lt = scene.lighting
    if scene.sky is not None:
        dn = d / d.norm(dim=-1, keepdim=True)
        h = dn[..., 1].clamp(0, 1) ** 0.6
        hor = torch.tensor(scene.sky[0], dtype=torch.float32)
        zen = torch.tensor(scene.sky[1], dtype=torch.float32)
        sky = hor + (zen - hor) * h[..., None]
        below = dn[..., 1] < 0
        sky = torch.where(below[..., None], hor * 0.8, sky)
        out = sky.expand(T, S, 3).clone()
    hsel = hit.reshape(-1).nonzero().squeeze(1)
    if len(hsel) == 0:
        return out
    tt = _g(t.reshape(-1), hsel)
    dd = _g(d.reshape(-1, 3), hsel)
    ii = _g(idx.reshape(-1), hsel)
    x = eye + tt[:, None] * dd
    n, p, nl = _surface(scene, x, dd, ii)
    mt = _material_table(scene.materials)
    footprint = tt * dd.norm(dim=-1) / focal  # metres per pixel along the ray
    # grazing angles stretch the footprint; include it so oblique floors fade rather than alias
    cosv = (-_dot(n, dd) / dd.norm(dim=-1)).clamp(0.05, 1.0)
    alb = _albedo(mt, ii, p, nl, footprint / cosv)

    if lt.kind == "sun":
        L = torch.nn.functional.normalize(torch.tensor(lt.direction, dtype=torch.float32), dim=0)
        ldir = L.expand_as(x)
        atten = torch.ones(len(x))
    elif lt.kind == "point":
        lp = torch.tensor(lt.position, dtype=torch.float32)
        tolight = lp - x
        dist = tolight.norm(dim=-1).clamp_min(1e-6)
        ldir = tolight / dist[:, None]
        atten = 1.0 / (1.0 + (dist / lt.falloff) ** 2)
    else:
        raise ValueError(f"unknown light kind {lt.kind!r}; use 'sun' or 'point'")
    lam = _dot(n, ldir).clamp_min(0)
    vis = torch.ones(len(x))
    if lt.shadows and bool(scene.casts_shadow.any()):
        vis = _shadow_visibility(scene, x, n, tt, ldir, lt, hit, hsel, lam)
    amb = torch.tensor(lt.ambient, dtype=torch.float32) * (0.8 + 0.2 * n[:, 1:2])
    light = amb + torch.tensor(lt.color, dtype=torch.float32) * (lam * vis * atten)[:, None]
    col = alb * light
    col = col.clamp(0, 1) ** (1 / 2.2)
    out = out.reshape(-1, 3).index_copy_(0, hsel, col).reshape(T, S, 3)
    return out


def _shadow_visibility(scene, x, n, tt, ldir, lt, hit, hsel, lam):
    """1 where the light is visible from x, 0 where a shadow caster blocks it. Rays are grouped by
    the screen tile of their pixel, so the same tile culling applies (with a bounding sphere of the
    tile's hit points swept towards the light)."""
    T, S = hit.shape
    M = len(x)
    need = lam > 0  # surfaces facing away are dark anyway
    origin = x + n * (2e-3 + 2e-4 * tt)[:, None]
    O = torch.zeros(T * S, 3)
    O.index_copy_(0, hsel, origin)
    act = torch.zeros(T * S, dtype=torch.bool)
    act.index_copy_(0, hsel, need)
    if lt.kind == "sun":
        D = ldir[:1].reshape(1, 1, 3)
        tmax = torch.full((T, S), math.inf)
        far = 1e4
    else:
        lp = torch.tensor(lt.position, dtype=torch.float32)
        D = torch.zeros(T * S, 3)
        D.index_copy_(0, hsel, lp - origin)
        tmax = torch.ones(T, S)
    O, act = O.reshape(T, S, 3), act.reshape(T, S)
    D = D.reshape(-1, S, 3) if D.shape[0] != 1 else D
    big = torch.full_like(O, 1e30)
    lo = torch.where(act[..., None], O, big).amin(dim=1)
    hi = torch.where(act[..., None], O, -big).amax(dim=1)
    any_act = act.any(dim=1)
    ctr = torch.where(any_act[:, None], (lo + hi) / 2, torch.zeros_like(lo))
    rad = torch.where(any_act, (hi - lo).norm(dim=-1) / 2, torch.zeros_like(lo[:, 0]))
    if lt.kind == "sun":
        Lw = ldir[0]
        end = ctr + far * Lw
    else:
        end = torch.tensor(lt.position, dtype=torch.float32).expand_as(ctr)
    centers, radii = _bounding_spheres(scene)
    finite = torch.isfinite(radii)
    segd = _segment_distance(torch.where(finite[:, None], centers, torch.zeros_like(centers))[None], ctr[:, None], end[:, None])
    cand = ((segd <= (radii[None] + rad[:, None] + 1e-3)) | ~finite[None]) & scene.casts_shadow[None] & any_act[:, None]
    blocked = _cast(scene, O, D, cand, act, any_hit_tmax=tmax)
    return 1.0 - _g(blocked.reshape(-1), hsel).float()


def _post_process(rgb: torch.Tensor, post: dict) -> np.ndarray:
    """Optional camera effects on sRGB float (H,W,3): gain/gamma jitter, 3x3 blur, sensor noise."""
    x = rgb
    if "gain" in post:
        x = x * torch.tensor(post["gain"], dtype=torch.float32)
    if "gamma" in post:
        x = x.clamp(0, 1) ** float(post["gamma"])
    if post.get("blur"):
        k = torch.tensor([0.25, 0.5, 0.25])
        xp = torch.nn.functional.pad(x.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")[0]
        xp = xp[:, :, :-2] * k[0] + xp[:, :, 1:-1] * k[1] + xp[:, :, 2:] * k[2]
        x = (xp[:, :-2] * k[0] + xp[:, 1:-1] * k[1] + xp[:, 2:] * k[2]).permute(1, 2, 0)
    if post.get("noise", 0) > 0:
        # uniform noise with the requested standard deviation: far cheaper to draw than Gaussian
        g = np.random.default_rng(int(post.get("seed", 0)))
        x = x + (torch.from_numpy(g.random(tuple(x.shape), dtype=np.float32)) - 0.5) * (float(post["noise"]) * 12 ** 0.5)
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------
# Random scene families
# ---------------------------------------------------------------------------------------------


def _hsv(h, s, v):
    import colorsys

    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)))


# colour families: (hue range, saturation range, value range)
_PALETTES = {
    "wall": ((0.0, 1.0), (0.0, 0.25), (0.55, 0.95)),
    "wood": ((0.04, 0.11), (0.35, 0.75), (0.25, 0.75)),
    "fabric": ((0.0, 1.0), (0.2, 0.8), (0.2, 0.85)),
    "stone": ((0.0, 1.0), (0.0, 0.15), (0.3, 0.85)),
    "brick": ((0.0, 0.08), (0.4, 0.75), (0.3, 0.7)),
    "asphalt": ((0.0, 1.0), (0.0, 0.06), (0.12, 0.35)),
    "grass": ((0.2, 0.35), (0.4, 0.8), (0.2, 0.55)),
    "foliage": ((0.18, 0.4), (0.45, 0.85), (0.15, 0.55)),
    "bark": ((0.05, 0.1), (0.3, 0.6), (0.15, 0.35)),
    "paint": ((0.0, 1.0), (0.5, 1.0), (0.3, 0.95)),
    "metal": ((0.0, 1.0), (0.0, 0.1), (0.3, 0.8)),
}

_PATTERN_CHOICE = {
    "wall": (("noise", "stripes", "plain", "tiles", "marble", "checker"), (4, 2, 2, 1, 1, 1)),
    "wood": (("wood", "stripes", "noise"), (6, 2, 2)),
    "fabric": (("noise", "stripes", "checker", "plain"), (3, 3, 2, 1)),
    "stone": (("marble", "noise", "tiles", "checker"), (3, 3, 3, 1)),
    "brick": (("tiles", "noise"), (5, 1)),
    "asphalt": (("noise",), (1,)),
    "grass": (("noise", "stripes"), (4, 1)),
    "foliage": (("noise",), (1,)),
    "bark": (("wood", "noise", "stripes"), (1, 2, 1)),
    "paint": (("plain", "noise", "stripes", "checker", "marble"), (3, 2, 1, 1, 1)),
    "metal": (("noise", "plain", "stripes"), (2, 2, 1)),
}


def _random_material(rng: np.random.Generator, kind: str, decals: float | None = None) -> Material:
    hr, sr, vr = _PALETTES[kind]
    h, s, v = rng.uniform(*hr), rng.uniform(*sr), rng.uniform(*vr)
    a = _hsv(h, s, v)
    # the second colour is a darker/lighter variant, sometimes a contrasting hue
    if rng.random() < 0.25:
        b = _hsv(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.1, 0.95))
    else:
        b = _hsv(h + rng.uniform(-0.05, 0.05), s * rng.uniform(0.6, 1.3), v * rng.uniform(0.35, 0.8))
    names, weights = _PATTERN_CHOICE[kind]
    w = np.asarray(weights, float)
    pattern = names[int(rng.choice(len(names), p=w / w.sum()))]
    direction = rng.normal(size=3)
    if rng.random() < 0.5:  # axis-aligned stripes and grain look man-made
        direction = np.eye(3)[rng.integers(3)]
    return Material(
        color_a=a, color_b=b, pattern=pattern,
        scale=float(np.exp(rng.uniform(np.log(0.04), np.log(1.5)))),
        direction=tuple(float(x) for x in direction),
        grain=float(rng.uniform(0.0, 0.35)),
        decal_density=float(rng.uniform(0.05, 0.3) if (rng.random() < 0.3 if decals is None else rng.random() < decals) else 0.0),
        decal_scale=float(np.exp(rng.uniform(np.log(0.1), np.log(1.5)))),
        seed=int(rng.integers(0, 1_000_000)),
    )


def _post_params(rng: np.random.Generator) -> dict:
    return {
        "gain": tuple(float(g) for g in rng.uniform(0.92, 1.08, 3) * rng.uniform(0.85, 1.15)),
        "gamma": float(rng.uniform(0.85, 1.15)),
        "blur": bool(rng.random() < 0.3),
        "noise": float(rng.uniform(0.0, 0.02)),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def _indoor(rng: np.random.Generator):
    b = SceneBuilder()
    W, D, H = rng.uniform(3.0, 8.0), rng.uniform(3.5, 10.0), rng.uniform(2.4, 3.4)
    wall = _random_material(rng, "wall", decals=0.3)
    floor = _random_material(rng, rng.choice(["wood", "stone", "fabric"]))
    ceil = Material(color_a=_hsv(0, 0, rng.uniform(0.75, 0.95)), color_b=_hsv(0, 0, 0.6), pattern="noise",
                    scale=float(rng.uniform(0.3, 2.0)), grain=0.1, seed=int(rng.integers(1_000_000)))
    b.add_plane((0, 0, 0), (0, 1, 0), floor)
    b.add_plane((0, H, 0), (0, -1, 0), ceil)
    walls = [((0, 0, 0), (1, 0, 0)), ((W, 0, 0), (-1, 0, 0)), ((0, 0, 0), (0, 0, 1)), ((0, 0, D), (0, 0, -1))]
    accent = rng.integers(4) if rng.random() < 0.4 else -1
    for k, (pt, nrm) in enumerate(walls):
        b.add_plane(pt, nrm, _random_material(rng, "wall") if k == accent else wall)

    # camera first, so furniture can keep clear of it
    cam_pos = np.array([rng.uniform(0.4, W - 0.4), rng.uniform(0.9, 1.9), rng.uniform(0.4, D - 0.4)])
    occupied = [(cam_pos[0], cam_pos[2], 0.5)]

    def free_spot(radius, tries=12):
        for _ in range(tries):
            x, z = rng.uniform(radius, W - radius), rng.uniform(radius, D - radius)
            if all((x - ox) ** 2 + (z - oz) ** 2 > (radius + orad) ** 2 for ox, oz, orad in occupied):
                occupied.append((x, z, radius))
                return x, z
        return None

    def wall_spot(depth, width):
        side = rng.integers(4)
        if side < 2:
            z = rng.uniform(width / 2, max(width / 2, D - width / 2))
            x = depth / 2 + 0.01 if side == 0 else W - depth / 2 - 0.01
            yaw = math.pi / 2
        else:
            x = rng.uniform(width / 2, max(width / 2, W - width / 2))
            z = depth / 2 + 0.01 if side == 2 else D - depth / 2 - 0.01
            yaw = 0.0
        if (x - cam_pos[0]) ** 2 + (z - cam_pos[2]) ** 2 < (0.6 + max(depth, width) / 2) ** 2:
            return None
        return x, z, yaw, side

    tops = []  # surfaces (x, y, z, half-size) where clutter can stand
    for _ in range(rng.integers(4, 12)):
        kind = rng.choice(["table", "chair", "cabinet", "sofa", "shelf", "lamp", "ball", "rug", "stool"],
                          p=[0.18, 0.16, 0.15, 0.1, 0.1, 0.08, 0.07, 0.08, 0.08])
        if kind in ("cabinet", "shelf", "sofa"):
            dep, wid = rng.uniform(0.35, 0.9), rng.uniform(0.6, 2.2)
            spot = wall_spot(dep, wid)
            if spot is None:
                continue
            x, z, yaw, _ = spot
            hgt = {"cabinet": rng.uniform(0.5, 1.2), "shelf": rng.uniform(1.4, 2.3), "sofa": rng.uniform(0.4, 0.5)}[kind]
            hgt = min(hgt, H - 0.1)
            mat = _random_material(rng, rng.choice(["wood", "paint", "fabric" if kind == "sofa" else "wood"]))
            R = _yaw_matrix(yaw)
            b.add_box((x, hgt / 2, z), (wid, hgt, dep), yaw=yaw, material=mat)
            if kind == "shelf":  # shelf boards sticking out give thin horizontal edges
                for yb in np.arange(0.35, hgt - 0.1, rng.uniform(0.3, 0.45)):
                    off = R @ np.array([0, 0, 0.0])
                    b.add_box((x + off[0], yb, z + off[2]), (wid + 0.04, 0.03, dep + 0.08), yaw=yaw, material=mat)
            if kind == "sofa":
                back = R @ np.array([0, 0, -dep / 2 + 0.1])
                side_wall = np.array([x, z]) - np.array([back[0], back[2]])
                b.add_box((x + back[0], hgt + 0.25, z + back[2]), (wid, 0.5, 0.2), yaw=yaw, material=mat)
                del side_wall
            else:
                tops.append((x, hgt, z, min(wid, dep) / 2 * 0.7))
        elif kind in ("table", "chair", "stool"):
            size = {"table": rng.uniform(0.7, 1.6), "chair": rng.uniform(0.4, 0.5), "stool": rng.uniform(0.3, 0.4)}[kind]
            depth_ = size * (rng.uniform(0.5, 1.0) if kind == "table" else 1.0)
            spot = free_spot(max(size, depth_) / 2 + 0.1)
            if spot is None:
                continue
            x, z = spot
            yaw = rng.uniform(0, 2 * math.pi) if rng.random() < 0.5 else rng.integers(4) * math.pi / 2
            hgt = {"table": rng.uniform(0.7, 0.78), "chair": rng.uniform(0.42, 0.48), "stool": rng.uniform(0.5, 0.75)}[kind]
            mat = _random_material(rng, rng.choice(["wood", "paint", "metal"]))
            leg_mat = mat if rng.random() < 0.6 else _random_material(rng, "metal")
            top_t = rng.uniform(0.03, 0.06)
            b.add_box((x, hgt - top_t / 2, z), (size, top_t, depth_), yaw=yaw, material=mat)
            R = _yaw_matrix(yaw)
            leg_r = rng.uniform(0.015, 0.04)
            for sx in (-1, 1):
                for sz in (-1, 1):
                    off = R @ np.array([sx * (size / 2 - 0.05), 0, sz * (depth_ / 2 - 0.05)])
                    b.add_cylinder((x + off[0], 0, z + off[2]), hgt - top_t, leg_r, leg_mat)
            if kind == "chair":
                off = R @ np.array([0, 0, -depth_ / 2 + 0.02])
                b.add_box((x + off[0], hgt + 0.22, z + off[2]), (size, 0.4, 0.04), yaw=yaw, material=mat)
            if kind == "table":
                tops.append((x, hgt, z, min(size, depth_) / 2 * 0.8))
        elif kind == "lamp":
            spot = free_spot(0.3)
            if spot is None:
                continue
            x, z = spot
            hgt = rng.uniform(1.2, min(1.8, H - 0.4))
            metal = _random_material(rng, "metal")
            b.add_cylinder((x, 0, z), 0.03, 0.18, metal)
            b.add_cylinder((x, 0, z), hgt, 0.015, metal)
            b.add_cylinder((x, hgt - 0.1, z), 0.3, rng.uniform(0.15, 0.25), _random_material(rng, "fabric"))
        elif kind == "ball":
            spot = free_spot(0.3)
            if spot is None:
                continue
            r = rng.uniform(0.1, 0.3)
            b.add_sphere((spot[0], r, spot[1]), r, _random_material(rng, "paint", decals=0.5))
        else:  # rug: a very thin box, a texture edge with (almost) no depth edge
            spot = free_spot(0.8)
            if spot is None:
                continue
            b.add_box((spot[0], 0.005, spot[1]), (rng.uniform(1, 2.5), 0.01, rng.uniform(0.8, 2)),
                      yaw=rng.uniform(0, math.pi), material=_random_material(rng, "fabric"), casts_shadow=False)
            occupied.pop()
    # wall decorations: pictures, doors, windows (thin boxes a few cm off the wall)
    for _ in range(rng.integers(1, 5)):
        wid, hgt = rng.uniform(0.3, 1.4), rng.uniform(0.3, 1.2)
        door = rng.random() < 0.2
        if door:
            wid, hgt = rng.uniform(0.8, 1.0), min(2.05, H - 0.2)
        spot = wall_spot(0.04, wid)
        if spot is None:
            continue
        x, z, yaw, _ = spot
        yc = hgt / 2 if door else rng.uniform(hgt / 2 + 0.8, max(hgt / 2 + 0.8, H - hgt / 2 - 0.2))
        b.add_box((x, yc, z), (wid, hgt, 0.04), yaw=yaw, material=_random_material(rng, rng.choice(["paint", "wood", "fabric"]), decals=0.5))
    # clutter on tops: small boxes (some tilted), spheres, cylinders
    for (x, y, z, rr) in tops:
        for _ in range(rng.integers(0, 4)):
            px, pz = x + rng.uniform(-rr, rr), z + rng.uniform(-rr, rr)
            kind = rng.integers(3)
            mat = _random_material(rng, rng.choice(["paint", "metal", "fabric", "wood"]), decals=0.4)
            if kind == 0:
                s = rng.uniform(0.06, 0.35, 3)
                rot = None
                if rng.random() < 0.3:  # tilted: a general rotation
                    q = rng.normal(size=4)
                    q /= np.linalg.norm(q)
                    w_, x_, y_, z_ = q
                    rot = np.array([[1 - 2 * (y_ * y_ + z_ * z_), 2 * (x_ * y_ - z_ * w_), 2 * (x_ * z_ + y_ * w_)],
                                    [2 * (x_ * y_ + z_ * w_), 1 - 2 * (x_ * x_ + z_ * z_), 2 * (y_ * z_ - x_ * w_)],
                                    [2 * (x_ * z_ - y_ * w_), 2 * (y_ * z_ + x_ * w_), 1 - 2 * (x_ * x_ + y_ * y_)]])
                b.add_box((px, y + s[1] / 2, pz), s, yaw=rng.uniform(0, math.pi), rotation=rot, material=mat)
            elif kind == 1:
                r = rng.uniform(0.04, 0.15)
                b.add_sphere((px, y + r, pz), r, mat)
            else:
                b.add_cylinder((px, y, pz), rng.uniform(0.08, 0.4), rng.uniform(0.03, 0.1), mat)

    target = np.array([rng.uniform(0.2 * W, 0.8 * W), 0, rng.uniform(0.2 * D, 0.8 * D)])
    yaw = math.atan2(target[0] - cam_pos[0], target[2] - cam_pos[2]) + rng.uniform(-0.5, 0.5)
    cam = Camera.from_angles(cam_pos, yaw, math.radians(rng.uniform(-35, 8)), math.radians(rng.uniform(-4, 4)),
                             hfov_deg=float(rng.uniform(50, 90)))
    warm = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.35), 1.0)
    if rng.random() < 0.6:
        lpos = (rng.uniform(0.3, W - 0.3), H - rng.uniform(0.1, 0.5), rng.uniform(0.3, D - 0.3))
        inten = rng.uniform(1.5, 2.6)
        light = Lighting(kind="point", position=lpos, color=tuple(c * inten for c in warm),
                         ambient=tuple(c * rng.uniform(0.2, 0.45) for c in warm), falloff=float(max(W, D) * 0.6))
    else:  # sunlight through a window: the room shell does not cast shadows
        el, az = math.radians(rng.uniform(20, 60)), rng.uniform(0, 2 * math.pi)
        light = Lighting(kind="sun", direction=(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)),
                         color=tuple(c * rng.uniform(0.7, 1.1) for c in warm),
                         ambient=tuple(c * rng.uniform(0.2, 0.45) for c in warm))
    for i in range(6):
        b._planes[i] = b._planes[i][:3] + (False,)
    return b.build(lighting=light, sky=None, max_depth=MAX_DEPTH["indoor"], post=_post_params(rng)), cam


def _outdoor(rng: np.random.Generator):
    b = SceneBuilder()
    road_w = rng.uniform(6.0, 14.0)
    walk_w = rng.uniform(1.5, 4.0)
    asphalt = _random_material(rng, "asphalt")
    asphalt.pattern, asphalt.grain = "noise", 0.3
    b.add_plane((0, 0, 0), (0, 1, 0), asphalt)
    curb_h = rng.uniform(0.1, 0.2)
    walk_mat = _random_material(rng, rng.choice(["stone", "stone", "grass"]))
    length = 200.0
    for s in (-1, 1):
        b.add_box((s * (road_w / 2 + walk_w / 2), curb_h / 2, length / 2 - 30), (walk_w, curb_h, length),
                  material=walk_mat, casts_shadow=False)
    line = Material(color_a=_hsv(rng.uniform(0.1, 0.16), rng.choice([0.0, 0.8]), 0.9), color_b=(0.6, 0.6, 0.6),
                    pattern="noise", scale=0.5, grain=0.2, seed=int(rng.integers(1_000_000)))
    z = -10.0
    dash, gap = rng.uniform(2, 4), rng.uniform(2, 6)
    while z < 60:
        b.add_box((0, 0.003, z + dash / 2), (0.15, 0.006, dash), material=line, casts_shadow=False)
        z += dash + gap
    # buildings on both sides
    for s in (-1, 1):
        z = rng.uniform(-30, -10)
        while z < 110:
            wid = rng.uniform(6, 22)
            gap_ = rng.uniform(0, 5) if rng.random() < 0.5 else 0.0
            hgt = rng.uniform(4, 35)
            dep = rng.uniform(8, 20)
            setback = rng.uniform(0, 3)
            xin = road_w / 2 + walk_w + setback
            mat = _random_material(rng, rng.choice(["brick", "stone", "wall", "wall"]), decals=0.2)
            if mat.pattern != "tiles" and rng.random() < 0.6:  # window grids
                mat.pattern, mat.scale = "tiles", float(rng.uniform(1.2, 3.5))
                mat.color_b = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0, 0.4), rng.uniform(0.1, 0.4))
            b.add_box((s * (xin + dep / 2), hgt / 2, z + wid / 2), (dep, hgt, wid), material=mat)
            if rng.random() < 0.3:  # a roof box or ledge breaks the skyline
                b.add_box((s * (xin + dep / 2), hgt + 0.6, z + wid / 2), (dep * 0.7, 1.2, wid * 0.7),
                          material=_random_material(rng, "stone"))
            z += wid + gap_
    if rng.random() < 0.5:  # a building closing the street
        zc = rng.uniform(40, 70)
        hgt = rng.uniform(6, 30)
        b.add_box((rng.uniform(-5, 5), hgt / 2, zc + 8), (rng.uniform(20, 60), hgt, 16),
                  material=_random_material(rng, rng.choice(["brick", "stone", "wall"])))
    # cars: a body and a cabin, parked along the curbs or in lanes
    for _ in range(rng.integers(1, 9)):
        lane = rng.choice([-1, 1])
        parked = rng.random() < 0.6
        x = lane * (road_w / 2 - 1.1 if parked else rng.uniform(1.0, max(1.0, road_w / 2 - 2.5)))
        zc = rng.uniform(3, 60)
        yaw = (0.0 if lane > 0 else math.pi) + rng.uniform(-0.08, 0.08)
        L, Wd = rng.uniform(3.6, 4.9), rng.uniform(1.6, 1.95)
        body = _random_material(rng, "paint", decals=0.1)
        body.pattern = "plain" if rng.random() < 0.6 else body.pattern
        dark = Material(color_a=(0.05, 0.05, 0.06), color_b=(0.15, 0.15, 0.15), pattern="noise", scale=0.3,
                        seed=int(rng.integers(1_000_000)))
        bh = rng.uniform(0.6, 0.85)
        b.add_box((x, 0.3 + bh / 2, zc), (Wd, bh, L), yaw=yaw, material=body)
        b.add_box((x, 0.17, zc), (Wd * 0.9, 0.34, L * 0.8), yaw=yaw, material=dark)
        ch = rng.uniform(0.45, 0.65)
        b.add_box((x, 0.3 + bh + ch / 2, zc - 0.1), (Wd * 0.85, ch, L * rng.uniform(0.4, 0.6)), yaw=yaw,
                  material=Material(color_a=_hsv(0.6, 0.2, 0.25), color_b=body.color_a, pattern="stripes",
                                    scale=float(rng.uniform(0.5, 1.5)), direction=(0, 1, 0), seed=int(rng.integers(1_000_000))))
    # poles and trees along the sidewalks
    pole_mat = _random_material(rng, "metal")
    spacing = rng.uniform(12, 30)
    for s in (-1, 1):
        z = rng.uniform(-5, spacing)
        while z < 90:
            x = s * (road_w / 2 + rng.uniform(0.3, 0.6))
            h = rng.uniform(4, 8)
            b.add_cylinder((x, curb_h, z), h, rng.uniform(0.06, 0.14), pole_mat)
            if rng.random() < 0.6:
                b.add_box((x - s * 0.6, curb_h + h, z), (1.4, 0.15, 0.3), material=pole_mat)
            z += spacing
    tree_sp = rng.uniform(8, 25)
    if rng.random() < 0.75:
        for s in (-1, 1):
            z = rng.uniform(-5, tree_sp)
            bark = _random_material(rng, "bark")
            leaves = _random_material(rng, "foliage")
            leaves.pattern, leaves.scale, leaves.grain = "noise", float(rng.uniform(0.1, 0.6)), 0.4
            while z < 90:
                x = s * (road_w / 2 + walk_w * rng.uniform(0.4, 0.8))
                th = rng.uniform(2, 4)
                b.add_cylinder((x, curb_h, z), th, rng.uniform(0.12, 0.3), bark)
                cr = rng.uniform(1.0, 2.6)
                b.add_sphere((x, curb_h + th + cr * 0.6, z), cr, leaves)
                if rng.random() < 0.5:
                    b.add_sphere((x + rng.uniform(-0.8, 0.8), curb_h + th + cr * 1.3, z + rng.uniform(-0.8, 0.8)),
                                 cr * 0.7, leaves)
                z += tree_sp * rng.uniform(0.7, 1.3)
    # a few small street objects near the camera: bollards, bins, boxes
    for _ in range(rng.integers(0, 5)):
        s = rng.choice([-1, 1])
        x = s * (road_w / 2 + rng.uniform(0.3, walk_w))
        zc = rng.uniform(2, 25)
        if rng.random() < 0.5:
            b.add_cylinder((x, curb_h, zc), rng.uniform(0.5, 1.1), rng.uniform(0.1, 0.35), _random_material(rng, "paint"))
        else:
            b.add_box((x, curb_h + 0.5, zc), rng.uniform(0.4, 1.2, 3), yaw=rng.uniform(0, math.pi),
                      material=_random_material(rng, "paint", decals=0.5))

    cam_pos = (rng.uniform(-road_w / 2 + 0.8, road_w / 2 - 0.8), rng.uniform(1.2, 3.0), rng.uniform(-3, 0))
    yaw = rng.uniform(-0.5, 0.5) if rng.random() < 0.8 else rng.uniform(-1.2, 1.2)
    cam = Camera.from_angles(cam_pos, yaw, math.radians(rng.uniform(-15, 6)), math.radians(rng.uniform(-3, 3)),
                             hfov_deg=float(rng.uniform(40, 90)))
    el, az = math.radians(rng.uniform(15, 70)), rng.uniform(0, 2 * math.pi)
    skies = [((0.85, 0.9, 0.95), (0.35, 0.55, 0.9)), ((0.8, 0.8, 0.82), (0.6, 0.62, 0.68)),
             ((0.98, 0.75, 0.5), (0.35, 0.4, 0.7)), ((0.9, 0.92, 0.96), (0.5, 0.7, 0.95))]
    sky = skies[int(rng.integers(len(skies)))]
    sun_col = _hsv(rng.uniform(0.06, 0.14), rng.uniform(0.0, 0.4), rng.uniform(0.9, 1.3))
    amb = tuple(float(c) * rng.uniform(0.25, 0.45) for c in _srgb_to_linear(torch.tensor(sky[1])).tolist())
    amb = tuple(a + 0.08 for a in amb)
    light = Lighting(kind="sun", direction=(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)),
                     color=sun_col, ambient=amb)
    return b.build(lighting=light, sky=sky, max_depth=MAX_DEPTH["outdoor"], post=_post_params(rng)), cam


def make_scene(seed: int, scene: str = "mixed") -> tuple[Scene, Camera]:
    """The random scene and camera for ``seed`` (a non-negative int) of family ``indoor|outdoor|mixed``."""
    if scene not in SCENE_FAMILIES:
        raise ValueError(f"unknown scene family {scene!r}; choose one of {', '.join(SCENE_FAMILIES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), SCENE_FAMILIES.index(scene)])
    family = scene
    if scene == "mixed":
        family = "indoor" if rng.random() < 0.5 else "outdoor"
    return (_indoor if family == "indoor" else _outdoor)(rng)


def render_scene(seed: int, height: int, width: int, scene: str = "mixed") -> dict:
    """Render random scene ``seed`` at ``height`` x ``width``.

    Returns numpy arrays ``rgb`` (H,W,3) uint8, ``depth`` (H,W) float32 planar z-depth in metres
    (0 where invalid; at most 20 m indoors, 65 m outdoors), ``valid`` (H,W) bool, ``intrinsics``
    (3,3) float32. The same arguments always give bit-identical arrays.
    """
    sc, cam = make_scene(seed, scene)
    return render(sc, cam, int(height), int(width))


def render_batch(seeds, height: int, width: int, scene: str = "mixed") -> dict:
    """Render several seeds; arrays are stacked along a new first axis (B, ...)."""
    outs = [render_scene(int(s), height, width, scene) for s in seeds]
    if not outs:
        raise ValueError("render_batch needs at least one seed")
    return {k: np.stack([o[k] for o in outs]) for k in outs[0]}


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


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
                depth = next((f"depth/{sid}{ext}" for ext in (".png", ".npy") if (self.root / "depth" / f"{sid}{ext}").exists()), None)
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

    def __init__(self, height: int, width: int, scene: str = "mixed", seed: int = 0, rank: int = 0,
                 world_size: int = 1, length: int | None = None):
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

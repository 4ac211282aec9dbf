"""Depth map -> coloured 3D point cloud (pinhole camera), written as binary PLY.

Coordinates are in the camera frame used by OpenCV: x to the right, y down, z forward
(along the optical axis), in the unit of the depth map passed in. Pixel ``(row, col)`` has its
centre at ``(col + 0.5, row + 0.5)`` and the principal point is the image centre
``(W / 2, H / 2)``, so a point straight ahead of the camera lands in the middle of the image.

The pipeline returns *affine-invariant* depth in [0, 1] (0 = near): its scale and shift are
unknown, so it is not a distance. :func:`relative_to_metric` turns it into a metric-like depth
for viewing, ``z = near + d * (far - near)``; only the ratio ``far / near`` changes the shape of
the cloud (a bigger ratio gives a deeper scene). Metric depth from elsewhere (a sensor, a metric
model) can be passed to :func:`depth_to_points` directly.

Flying pixels: where depth jumps between a foreground and a background object, a network
blends the two and the pixels on the seam float in mid-air between them. :func:`flying_pixel_mask`
drops every pixel whose relative depth difference to any of its 4 neighbours,
``|z_p - z_q| / min(z_p, z_q)``, exceeds ``flying_pixel_threshold`` (default 0.05, i.e. 5 %). A
smooth surface changes by far less than that between neighbouring pixels (a plane tilted 60 deg
away from the camera changes by about 0.3 % per pixel at a 60 deg field of view and 640 px width),
so only discontinuities are hit; both sides of a step lose their seam pixel.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

DEFAULT_FOV_DEG = 60.0
DEFAULT_FLYING_PIXEL_THRESHOLD = 0.05

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def focal_from_fov(width: int, fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Focal length in pixels for an image ``width`` px wide seen with a horizontal field of view in degrees (0, 180)."""
    if not (0.0 < float(fov_deg) < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
    if int(width) < 1:
        raise ValueError(f"width must be a positive number of pixels, got {width}")
    return 0.5 * int(width) / math.tan(math.radians(float(fov_deg)) / 2.0)


def relative_to_metric(depth01: np.ndarray, near: float = 1.0, far: float = 10.0) -> np.ndarray:
    """Map affine-invariant depth in [0, 1] (0 = near) to ``near + d * (far - near)``.

    ``near`` and ``far`` are in whatever unit the viewer should show (e.g. metres), with
    ``0 < near < far``. Values outside [0, 1] are clipped first. Returns float32.
    """
    if not (0.0 < float(near) < float(far)) or not math.isfinite(float(far)):
        raise ValueError(f"need 0 < near < far (finite), got near={near}, far={far}")
    d = np.clip(np.asarray(depth01, dtype=np.float32), 0.0, 1.0)
    return (np.float32(near) + d * np.float32(far - near)).astype(np.float32)


def flying_pixel_mask(
    depth: np.ndarray, threshold: float = DEFAULT_FLYING_PIXEL_THRESHOLD, valid: np.ndarray | None = None
) -> np.ndarray:
    """Return a bool (H, W) mask, True where a pixel is *kept*.

    A pixel is dropped when it is invalid (``valid`` False, depth not finite or <= 0) or when
    ``|z_p - z_q| / min(z_p, z_q) > threshold`` for any valid 4-neighbour ``q``. ``threshold``
    is a dimensionless ratio (0.05 = 5 %); ``None`` or ``inf`` keeps all valid pixels.
    """
    z = np.asarray(depth, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {z.shape}")
    ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != z.shape:
            raise ValueError(f"valid has shape {valid.shape}, depth has {z.shape}")
        ok &= valid
    if threshold is None or not math.isfinite(float(threshold)):
        return ok
    if float(threshold) <= 0:
        raise ValueError(f"flying_pixel_threshold must be > 0, got {threshold}")
    keep = ok.copy()
    zs = np.where(ok, z, 1.0)  # placeholder keeps the ratio finite; invalid pairs are masked out below
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        za, zb = zs[tuple(a)], zs[tuple(b)]
        both = ok[tuple(a)] & ok[tuple(b)]
        jump = both & (np.abs(za - zb) > float(threshold) * np.minimum(za, zb))
        keep[tuple(a)] &= ~jump
        keep[tuple(b)] &= ~jump
    return keep


def _intrinsics(h: int, w: int, focal: float | None, fov_deg: float) -> tuple[float, float, float]:
    if focal is None:
        f = focal_from_fov(w, fov_deg)
    else:
        f = float(focal)
        if not (f > 0 and math.isfinite(f)):
            raise ValueError(f"focal must be a positive number of pixels, got {focal}")
    return f, w / 2.0, h / 2.0


def _check_rgb(rgb, shape) -> np.ndarray | None:
    if rgb is None:
        return None
    rgb = np.asarray(rgb)
    if rgb.shape != (*shape, 3):
        raise ValueError(f"rgb must be (H, W, 3) matching depth {shape}, got {rgb.shape}")
    if rgb.dtype != np.uint8:  # float images are taken as [0, 1]
        rgb = (np.clip(rgb.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return rgb


def depth_to_points(
    depth: np.ndarray,
    rgb: np.ndarray | None = None,
    focal: float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    valid: np.ndarray | None = None,
    flying_pixel_threshold: float | None = DEFAULT_FLYING_PIXEL_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Unproject a planar z-depth map to 3D points with a pinhole camera.

    ``depth`` (H, W): distance along the optical axis in any unit (> 0; use
    :func:`relative_to_metric` for the pipeline's [0, 1] output). ``rgb``: (H, W, 3) uint8, or
    float in [0, 1]; None gives grey points. ``focal``: focal length in pixels; when None it is
    derived from ``fov_deg``, the horizontal field of view in degrees. Pixels that are invalid
    or flying (see :func:`flying_pixel_mask`) are dropped.

    Returns ``points`` float32 (N, 3) in the camera frame (x right, y down, z forward, same
    unit as ``depth``) and ``colors`` uint8 (N, 3), in row-major pixel order.
    """
    z = np.asarray(depth, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {z.shape}")
    h, w = z.shape
    rgb = _check_rgb(rgb, (h, w))
    f, cx, cy = _intrinsics(h, w, focal, fov_deg)
    keep = flying_pixel_mask(z, flying_pixel_threshold, valid)
    rows, cols = np.nonzero(keep)
    zk = z[rows, cols].astype(np.float64)
    x = (cols + 0.5 - cx) / f * zk
    y = (rows + 0.5 - cy) / f * zk
    points = np.stack([x, y, zk], axis=1).astype(np.float32)
    if rgb is None:
        colors = np.full((len(rows), 3), 200, dtype=np.uint8)
    else:
        colors = rgb[rows, cols].copy()
    return points, colors


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write points (N, 3) float and optional colors (N, 3) uint8 as binary little-endian PLY.

    Vertex properties: ``x y z`` float32, then ``red green blue`` uchar when colours are given.
    The file is written atomically. Returns the path.
    """
    from apdepth.image_io import atomic_write

    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise ValueError(f"colors must be (N, 3) like points {points.shape}, got {colors.shape}")
        if colors.dtype != np.uint8:
            raise ValueError(f"colors must be uint8 (0..255), got {colors.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(points), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colors is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by apdepth",
        f"element vertex {len(points)}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if colors is not None:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    header = ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")
    with atomic_write(path) as fh:
        fh.write(header)
        fh.write(vertex.tobytes())
    return Path(path)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the vertices of a PLY file (ascii or binary, scalar properties only).

    Returns ``points`` float32 (N, 3) and ``colors`` uint8 (N, 3), or None when the file has
    no red/green/blue properties. Elements after ``vertex`` (e.g. faces) are ignored.
    """
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if tok[1] == "list":
                if elements and elements[-1][0] == "vertex":
                    raise ValueError(f"{path}: list properties on vertices are not supported")
                continue
            if tok[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unknown PLY property type {tok[1]!r}")
            elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex'")
    _, count, props = elements[0]
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii").split("\n")[:count]
        table = np.array([r.split()[: len(props)] for r in rows], dtype=np.float64).reshape(count, len(props))
        vertex = {name: table[:, i] for i, (name, _) in enumerate(props)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + t if t[1] != "1" else t) for name, t in props])
        if len(data) - body_start < dtype.itemsize * count:
            raise ValueError(f"{path}: truncated PLY body ({count} vertices declared)")
        vertex = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
    names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{path}: vertex element lacks x/y/z")
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    colors = None
    if {"red", "green", "blue"} <= set(names):
        colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)
    return points, colors


def save_depth_ply(
    path: str | os.PathLike,
    depth: np.ndarray,
    rgb: np.ndarray | None = None,
    *,
    focal: float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    near: float = 1.0,
    far: float = 10.0,
    metric: bool = False,
    flying_pixel_threshold: float | None = DEFAULT_FLYING_PIXEL_THRESHOLD,
) -> int:
    """Write ``<path>`` as a coloured point cloud of a depth map; returns the number of points.

    With ``metric=False`` (default) ``depth`` is the pipeline's affine-invariant [0, 1] output
    and is first mapped with :func:`relative_to_metric` (``near``, ``far``); with
    ``metric=True`` it is used as z-depth as is.
    """
    z = np.asarray(depth, dtype=np.float32) if metric else relative_to_metric(depth, near, far)
    points, colors = depth_to_points(
        z, rgb, focal=focal, fov_deg=fov_deg, flying_pixel_threshold=flying_pixel_threshold
    )
    write_ply(path, points, colors)
    return len(points)


def write_glb_points(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write points (N, 3) and uint8 colours (N, 3) as a glTF binary (.glb) point primitive.

    glTF's frame is y up, z towards the viewer, so the OpenCV camera frame of
    :func:`depth_to_points` is converted with (x, -y, -z): the cloud then appears upright in
    web viewers. The material is unlit so the colours show as captured. Written atomically.
    """
    import json

    from apdepth.image_io import atomic_write

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3) * np.array([1, -1, -1], np.float32)
    col = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(col) != len(pts):
        raise ValueError(f"colors ({len(col)}) and points ({len(pts)}) differ in length")
    rgba = np.concatenate([col, np.full((len(col), 1), 255, np.uint8)], axis=1)  # 4-byte aligned stride
    pos_bytes, col_bytes = pts.tobytes(), rgba.tobytes()
    lo = pts.min(axis=0).tolist() if len(pts) else [0.0, 0.0, 0.0]
    hi = pts.max(axis=0).tolist() if len(pts) else [0.0, 0.0, 0.0]
    gltf = {
        "asset": {"version": "2.0", "generator": "apdepth"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "materials": [
            {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}, "extensions": {"KHR_materials_unlit": {}}}
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": 0, "material": 0}]}],
        "buffers": [{"byteLength": len(pos_bytes) + len(col_bytes)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(pos_bytes), "target": 34962},
            {"buffer": 0, "byteOffset": len(pos_bytes), "byteLength": len(col_bytes), "target": 34962},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(pts), "type": "VEC3", "min": lo, "max": hi},
            {"bufferView": 1, "componentType": 5121, "normalized": True, "count": len(pts), "type": "VEC4"},
        ],
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    binary = pos_bytes + col_bytes
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    with atomic_write(path) as fh:
        fh.write(struct.pack("<4sII", b"glTF", 2, total))
        fh.write(struct.pack("<I4s", len(js), b"JSON") + js)
        fh.write(struct.pack("<I4s", len(binary), b"BIN\0") + binary)
    return Path(path)

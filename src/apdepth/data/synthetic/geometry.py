"""Scene description: materials, lighting, primitives (:class:`Scene`, built by :class:`SceneBuilder`)
and the pinhole :class:`Camera`. Units are metres; conventions are in the package docstring.

Everything here but :meth:`SceneSpec.to_scene` is free of torch, so a process that only draws scenes (the
parent of ``apdepth synth --workers N``) never pays for importing it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_EYE3 = np.eye(3)

# Pattern ids of the procedural textures.
PATTERNS = ("noise", "stripes", "checker", "wood", "marble", "tiles", "plain")


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
        """Number of (planes, boxes, spheres, cylinders)."""
        return (len(self.plane_offset), len(self.box_half), len(self.sphere_radius), len(self.cyl_radius))


class SceneBuilder:
    """Collect primitives in world coordinates (metres) and build a :class:`Scene`."""

    def __init__(self):
        self._planes: list = []
        self._boxes: list = []
        self._spheres: list = []
        self._cyls: list = []

    def add_plane(self, point, normal, material: Material | None = None, casts_shadow: bool = False):
        """Add an infinite plane through ``point`` with ``normal`` (any length but zero); returns the builder."""
        n = np.asarray(normal, np.float64)
        if np.linalg.norm(n) == 0:
            raise ValueError("plane normal must be non-zero")
        n = n / np.linalg.norm(n)
        self._planes.append((n, float(n @ np.asarray(point, np.float64)), material or Material(), casts_shadow))
        return self

    def add_box(
        self, center, size, yaw: float = 0.0, rotation=None, material: Material | None = None, casts_shadow: bool = True
    ):
        """``size`` = full extents (x, y, z) in metres; ``yaw`` rotates about +y (radians) unless a full
        3x3 ``rotation`` (columns = local axes in world) is given."""
        size = np.asarray(size, np.float64)
        if size.shape != (3,) or np.any(size <= 0):
            raise ValueError(f"box size must be three positive extents, got {size.tolist()}")
        rot = _yaw_matrix(yaw) if rotation is None else np.asarray(rotation, np.float64)
        # np.allclose(rot.T @ rot, I, atol=1e-5) written out: that call costs more than the rest of add_box
        if rot.shape != (3, 3) or not (np.abs(rot.T @ rot - _EYE3) <= 1e-5 + 1e-5 * _EYE3).all():
            raise ValueError("box rotation must be an orthonormal 3x3 matrix (columns = local axes in world)")
        self._boxes.append(
            (np.asarray(center, np.float64), rot.T.copy(), size / 2, material or Material(), casts_shadow)
        )
        return self

    def add_sphere(self, center, radius: float, material: Material | None = None, casts_shadow: bool = True):
        """Add a sphere at ``center`` with ``radius`` > 0 metres; returns the builder."""
        if not radius > 0:
            raise ValueError(f"sphere radius must be > 0, got {radius}")
        self._spheres.append((np.asarray(center, np.float64), float(radius), material or Material(), casts_shadow))
        return self

    def add_cylinder(
        self, base, height: float, radius: float, material: Material | None = None, casts_shadow: bool = True
    ):
        """Vertical capped cylinder standing on ``base`` (centre of its bottom cap)."""
        if not (height > 0 and radius > 0):
            raise ValueError(f"cylinder height and radius must be > 0, got {height}, {radius}")
        self._cyls.append(
            (np.asarray(base, np.float64), float(height), float(radius), material or Material(), casts_shadow)
        )
        return self

    def spec(
        self, lighting: Lighting | None = None, sky=None, max_depth: float = 80.0, post: dict | None = None
    ) -> SceneSpec:
        """Everything added as a torch-free :class:`SceneSpec` (arguments as for :meth:`build`)."""
        p, b, s, c = self._planes, self._boxes, self._spheres, self._cyls
        if len(p) + len(b) + len(s) + len(c) >= 1 << 20:
            raise ValueError("a scene may hold at most 2**20 - 1 primitives")

        def a(rows, shape):
            return np.asarray(rows, np.float64).reshape(shape)

        return SceneSpec(
            plane_normal=a([x[0] for x in p], (-1, 3)),
            plane_offset=a([x[1] for x in p], (-1,)),
            box_center=a([x[0] for x in b], (-1, 3)),
            box_axes=a([x[1] for x in b], (-1, 3, 3)),
            box_half=a([x[2] for x in b], (-1, 3)),
            sphere_center=a([x[0] for x in s], (-1, 3)),
            sphere_radius=a([x[1] for x in s], (-1,)),
            cyl_base=a([x[0] for x in c], (-1, 3)),
            cyl_height=a([x[1] for x in c], (-1,)),
            cyl_radius=a([x[2] for x in c], (-1,)),
            casts_shadow=np.array([x[-1] for x in p + b + s + c], dtype=bool),
            materials=[x[-2] for x in p + b + s + c],
            lighting=lighting or Lighting(),
            sky=sky,
            max_depth=float(max_depth),
            post=dict(post or {}),
        )

    def build(
        self, lighting: Lighting | None = None, sky=None, max_depth: float = 80.0, post: dict | None = None
    ) -> Scene:
        """The :class:`Scene` of everything added, with ``lighting``, ``sky`` ((horizon, zenith) sRGB or None),
        the far plane ``max_depth`` (metres) and optional ``post`` image effects. At most 2**20 - 1 primitives."""
        return self.spec(lighting, sky, max_depth, post).to_scene()


@dataclass
class SceneSpec:
    """A scene as numpy arrays (float64, the fields and shapes of :class:`Scene`) plus materials, lighting and
    image effects: what :class:`SceneBuilder` collected, without torch. It pickles compactly (~10 KB for a
    random scene), so one process can draw scenes while others render them; :meth:`to_scene` gives the
    :class:`Scene` (float32 tensors)."""

    plane_normal: np.ndarray
    plane_offset: np.ndarray
    box_center: np.ndarray
    box_axes: np.ndarray
    box_half: np.ndarray
    sphere_center: np.ndarray
    sphere_radius: np.ndarray
    cyl_base: np.ndarray
    cyl_height: np.ndarray
    cyl_radius: np.ndarray
    casts_shadow: np.ndarray  # (N,) bool
    materials: list[Material]
    lighting: Lighting = field(default_factory=Lighting)
    sky: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    max_depth: float = 80.0
    post: dict = field(default_factory=dict)

    def to_scene(self) -> Scene:
        """The :class:`Scene`: every array as a float32 tensor (``casts_shadow`` bool), the rest shared."""
        import torch

        def t(a):
            return torch.tensor(a, dtype=torch.float32)

        return Scene(
            plane_normal=t(self.plane_normal),
            plane_offset=t(self.plane_offset),
            box_center=t(self.box_center),
            box_axes=t(self.box_axes),
            box_half=t(self.box_half),
            sphere_center=t(self.sphere_center),
            sphere_radius=t(self.sphere_radius),
            cyl_base=t(self.cyl_base),
            cyl_height=t(self.cyl_height),
            cyl_radius=t(self.cyl_radius),
            casts_shadow=torch.from_numpy(self.casts_shadow.copy()),
            materials=self.materials,
            lighting=self.lighting,
            sky=self.sky,
            max_depth=self.max_depth,
            post=self.post,
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
        """Camera at ``eye`` looking at ``target`` (world metres), ``roll`` in radians; ValueError if they coincide."""
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

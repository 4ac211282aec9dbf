"""Random scene families (``indoor`` rooms, ``outdoor`` streets, ``mixed``): the random material,
camera and post-processing parameters drawn for a seed, and the seed -> image entry points.

Drawing a scene (:func:`make_scene_spec`) needs numpy only; torch is imported when a scene is built or
rendered."""

from __future__ import annotations

import math

import numpy as np

from .geometry import Camera, Lighting, Material, Scene, SceneBuilder, SceneSpec, _yaw_matrix

SCENE_FAMILIES = ("indoor", "outdoor", "mixed")
#: Far planes in metres. Outdoor stays below 65.535 m so that depth fits a 16-bit millimetre PNG.
MAX_DEPTH = {"indoor": 20.0, "outdoor": 65.0}


# outdoor skies: (horizon, zenith) sRGB
_SKIES = (
    ((0.85, 0.9, 0.95), (0.35, 0.55, 0.9)),
    ((0.8, 0.8, 0.82), (0.6, 0.62, 0.68)),
    ((0.98, 0.75, 0.5), (0.35, 0.4, 0.7)),
    ((0.9, 0.92, 0.96), (0.5, 0.7, 0.95)),
)
# Each zenith colour in linear RGB, as float32 ``shading._srgb_to_linear`` gives it (``c ** 2.2`` in torch, whose
# float32 pow can differ from numpy's by an ulp): stored so that drawing a scene needs no torch, and checked
# against torch by the tests.
_SKY_ZENITH_LINEAR = (
    (0.09930010139942169, 0.26840952038764954, 0.7931101322174072),
    (0.32503700256347656, 0.34935078024864197, 0.42807474732398987),
    (0.09930010139942169, 0.1332085132598877, 0.4562634527683258),
    (0.21763764321804047, 0.4562634527683258, 0.8932888507843018),
)


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
        color_a=a,
        color_b=b,
        pattern=pattern,
        scale=float(np.exp(rng.uniform(np.log(0.04), np.log(1.5)))),
        direction=tuple(float(x) for x in direction),
        grain=float(rng.uniform(0.0, 0.35)),
        decal_density=float(
            rng.uniform(0.05, 0.3) if (rng.random() < 0.3 if decals is None else rng.random() < decals) else 0.0
        ),
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
    ceil = Material(
        color_a=_hsv(0, 0, rng.uniform(0.75, 0.95)),
        color_b=_hsv(0, 0, 0.6),
        pattern="noise",
        scale=float(rng.uniform(0.3, 2.0)),
        grain=0.1,
        seed=int(rng.integers(1_000_000)),
    )
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
        else:
            x = rng.uniform(width / 2, max(width / 2, W - width / 2))
            z = depth / 2 + 0.01 if side == 2 else D - depth / 2 - 0.01
        yaw = (math.pi / 2, -math.pi / 2, 0.0, math.pi)[side]  # the local -z axis faces the wall
        if (x - cam_pos[0]) ** 2 + (z - cam_pos[2]) ** 2 < (0.6 + max(depth, width) / 2) ** 2:
            return None
        return x, z, yaw, side

    tops = []  # surfaces (x, y, z, half-size) where clutter can stand
    for _ in range(rng.integers(4, 12)):
        kind = rng.choice(
            ["table", "chair", "cabinet", "sofa", "shelf", "lamp", "ball", "rug", "stool"],
            p=[0.18, 0.16, 0.15, 0.1, 0.1, 0.08, 0.07, 0.08, 0.08],
        )
        if kind in ("cabinet", "shelf", "sofa"):
            dep, wid = rng.uniform(0.35, 0.9), rng.uniform(0.6, 2.2)
            spot = wall_spot(dep, wid)
            if spot is None:
                continue
            x, z, yaw, _ = spot
            hgt = {"cabinet": rng.uniform(0.5, 1.2), "shelf": rng.uniform(1.4, 2.3), "sofa": rng.uniform(0.4, 0.5)}[
                kind
            ]
            hgt = min(hgt, H - 0.1)
            mat = _random_material(rng, rng.choice(["wood", "paint", "fabric" if kind == "sofa" else "wood"]))
            R = _yaw_matrix(yaw)
            b.add_box((x, hgt / 2, z), (wid, hgt, dep), yaw=yaw, material=mat)
            if kind == "shelf":  # shelf boards sticking out give thin horizontal edges
                for yb in np.arange(0.35, hgt - 0.1, rng.uniform(0.3, 0.45)):
                    b.add_box((x, yb, z), (wid + 0.04, 0.03, dep + 0.08), yaw=yaw, material=mat)
            if kind == "sofa":
                back = R @ np.array([0, 0, -dep / 2 + 0.1])
                b.add_box((x + back[0], hgt + 0.25, z + back[2]), (wid, 0.5, 0.2), yaw=yaw, material=mat)
            else:
                tops.append((x, hgt, z, min(wid, dep) / 2 * 0.7))
        elif kind in ("table", "chair", "stool"):
            size = {"table": rng.uniform(0.7, 1.6), "chair": rng.uniform(0.4, 0.5), "stool": rng.uniform(0.3, 0.4)}[
                kind
            ]
            depth_ = size * (rng.uniform(0.5, 1.0) if kind == "table" else 1.0)
            spot = free_spot(max(size, depth_) / 2 + 0.1)
            if spot is None:
                continue
            x, z = spot
            yaw = rng.uniform(0, 2 * math.pi) if rng.random() < 0.5 else rng.integers(4) * math.pi / 2
            hgt = {"table": rng.uniform(0.7, 0.78), "chair": rng.uniform(0.42, 0.48), "stool": rng.uniform(0.5, 0.75)}[
                kind
            ]
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
            b.add_box(
                (spot[0], 0.005, spot[1]),
                (rng.uniform(1, 2.5), 0.01, rng.uniform(0.8, 2)),
                yaw=rng.uniform(0, math.pi),
                material=_random_material(rng, "fabric"),
                casts_shadow=False,
            )
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
        b.add_box(
            (x, yc, z),
            (wid, hgt, 0.04),
            yaw=yaw,
            material=_random_material(rng, rng.choice(["paint", "wood", "fabric"]), decals=0.5),
        )
    # clutter on tops: small boxes (some tilted), spheres, cylinders
    for x, y, z, rr in tops:
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
                    rot = np.array(
                        [
                            [1 - 2 * (y_ * y_ + z_ * z_), 2 * (x_ * y_ - z_ * w_), 2 * (x_ * z_ + y_ * w_)],
                            [2 * (x_ * y_ + z_ * w_), 1 - 2 * (x_ * x_ + z_ * z_), 2 * (y_ * z_ - x_ * w_)],
                            [2 * (x_ * z_ - y_ * w_), 2 * (y_ * z_ + x_ * w_), 1 - 2 * (x_ * x_ + y_ * y_)],
                        ]
                    )
                b.add_box((px, y + s[1] / 2, pz), s, yaw=rng.uniform(0, math.pi), rotation=rot, material=mat)
            elif kind == 1:
                r = rng.uniform(0.04, 0.15)
                b.add_sphere((px, y + r, pz), r, mat)
            else:
                b.add_cylinder((px, y, pz), rng.uniform(0.08, 0.4), rng.uniform(0.03, 0.1), mat)

    target = np.array([rng.uniform(0.2 * W, 0.8 * W), 0, rng.uniform(0.2 * D, 0.8 * D)])
    yaw = math.atan2(target[0] - cam_pos[0], target[2] - cam_pos[2]) + rng.uniform(-0.5, 0.5)
    cam = Camera.from_angles(
        cam_pos,
        yaw,
        math.radians(rng.uniform(-35, 8)),
        math.radians(rng.uniform(-4, 4)),
        hfov_deg=float(rng.uniform(50, 90)),
    )
    warm = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.35), 1.0)
    if rng.random() < 0.6:
        lpos = (rng.uniform(0.3, W - 0.3), H - rng.uniform(0.1, 0.5), rng.uniform(0.3, D - 0.3))
        inten = rng.uniform(1.5, 2.6)
        light = Lighting(
            kind="point",
            position=lpos,
            color=tuple(c * inten for c in warm),
            ambient=tuple(c * rng.uniform(0.2, 0.45) for c in warm),
            falloff=float(max(W, D) * 0.6),
        )
    else:  # sunlight through a window: the room shell does not cast shadows
        el, az = math.radians(rng.uniform(20, 60)), rng.uniform(0, 2 * math.pi)
        light = Lighting(
            kind="sun",
            direction=(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)),
            color=tuple(c * rng.uniform(0.7, 1.1) for c in warm),
            ambient=tuple(c * rng.uniform(0.2, 0.45) for c in warm),
        )
    for i in range(6):
        b._planes[i] = b._planes[i][:3] + (False,)
    return b.spec(lighting=light, sky=None, max_depth=MAX_DEPTH["indoor"], post=_post_params(rng)), cam


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
        b.add_box(
            (s * (road_w / 2 + walk_w / 2), curb_h / 2, length / 2 - 30),
            (walk_w, curb_h, length),
            material=walk_mat,
            casts_shadow=False,
        )
    line = Material(
        color_a=_hsv(rng.uniform(0.1, 0.16), rng.choice([0.0, 0.8]), 0.9),
        color_b=(0.6, 0.6, 0.6),
        pattern="noise",
        scale=0.5,
        grain=0.2,
        seed=int(rng.integers(1_000_000)),
    )
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
                b.add_box(
                    (s * (xin + dep / 2), hgt + 0.6, z + wid / 2),
                    (dep * 0.7, 1.2, wid * 0.7),
                    material=_random_material(rng, "stone"),
                )
            z += wid + gap_
    if rng.random() < 0.5:  # a building closing the street
        zc = rng.uniform(40, 70)
        hgt = rng.uniform(6, 30)
        b.add_box(
            (rng.uniform(-5, 5), hgt / 2, zc + 8),
            (rng.uniform(20, 60), hgt, 16),
            material=_random_material(rng, rng.choice(["brick", "stone", "wall"])),
        )
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
        dark = Material(
            color_a=(0.05, 0.05, 0.06),
            color_b=(0.15, 0.15, 0.15),
            pattern="noise",
            scale=0.3,
            seed=int(rng.integers(1_000_000)),
        )
        bh = rng.uniform(0.6, 0.85)
        b.add_box((x, 0.3 + bh / 2, zc), (Wd, bh, L), yaw=yaw, material=body)
        b.add_box((x, 0.17, zc), (Wd * 0.9, 0.34, L * 0.8), yaw=yaw, material=dark)
        ch = rng.uniform(0.45, 0.65)
        b.add_box(
            (x, 0.3 + bh + ch / 2, zc - 0.1),
            (Wd * 0.85, ch, L * rng.uniform(0.4, 0.6)),
            yaw=yaw,
            material=Material(
                color_a=_hsv(0.6, 0.2, 0.25),
                color_b=body.color_a,
                pattern="stripes",
                scale=float(rng.uniform(0.5, 1.5)),
                direction=(0, 1, 0),
                seed=int(rng.integers(1_000_000)),
            ),
        )
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
                    b.add_sphere(
                        (x + rng.uniform(-0.8, 0.8), curb_h + th + cr * 1.3, z + rng.uniform(-0.8, 0.8)),
                        cr * 0.7,
                        leaves,
                    )
                z += tree_sp * rng.uniform(0.7, 1.3)
    # a few small street objects near the camera: bollards, bins, boxes
    for _ in range(rng.integers(0, 5)):
        s = rng.choice([-1, 1])
        x = s * (road_w / 2 + rng.uniform(0.3, walk_w))
        zc = rng.uniform(2, 25)
        if rng.random() < 0.5:
            b.add_cylinder(
                (x, curb_h, zc), rng.uniform(0.5, 1.1), rng.uniform(0.1, 0.35), _random_material(rng, "paint")
            )
        else:
            b.add_box(
                (x, curb_h + 0.5, zc),
                rng.uniform(0.4, 1.2, 3),
                yaw=rng.uniform(0, math.pi),
                material=_random_material(rng, "paint", decals=0.5),
            )

    cam_pos = (rng.uniform(-road_w / 2 + 0.8, road_w / 2 - 0.8), rng.uniform(1.2, 3.0), rng.uniform(-3, 0))
    yaw = rng.uniform(-0.5, 0.5) if rng.random() < 0.8 else rng.uniform(-1.2, 1.2)
    cam = Camera.from_angles(
        cam_pos,
        yaw,
        math.radians(rng.uniform(-15, 6)),
        math.radians(rng.uniform(-3, 3)),
        hfov_deg=float(rng.uniform(40, 90)),
    )
    el, az = math.radians(rng.uniform(15, 70)), rng.uniform(0, 2 * math.pi)
    k = int(rng.integers(len(_SKIES)))
    sky = _SKIES[k]
    sun_col = _hsv(rng.uniform(0.06, 0.14), rng.uniform(0.0, 0.4), rng.uniform(0.9, 1.3))
    amb = tuple(float(c) * rng.uniform(0.25, 0.45) for c in _SKY_ZENITH_LINEAR[k])
    amb = tuple(a + 0.08 for a in amb)
    light = Lighting(
        kind="sun",
        direction=(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)),
        color=sun_col,
        ambient=amb,
    )
    return b.spec(lighting=light, sky=sky, max_depth=MAX_DEPTH["outdoor"], post=_post_params(rng)), cam


def make_scene(seed: int, scene: str = "mixed") -> tuple[Scene, Camera]:
    """The random scene and camera for ``seed`` (a non-negative int) of family ``indoor|outdoor|mixed``."""
    spec, cam = make_scene_spec(seed, scene)
    return spec.to_scene(), cam


def make_scene_spec(seed: int, scene: str = "mixed") -> tuple[SceneSpec, Camera]:
    """:func:`make_scene` without torch: the scene as a :class:`SceneSpec` (``spec.to_scene()`` builds it)."""
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
    from .render import render

    sc, cam = make_scene(seed, scene)
    return render(sc, cam, int(height), int(width))


def render_batch(seeds, height: int, width: int, scene: str = "mixed") -> dict:
    """Render several seeds; arrays are stacked along a new first axis (B, ...)."""
    outs = [render_scene(int(s), height, width, scene) for s in seeds]
    if not outs:
        raise ValueError("render_batch needs at least one seed")
    return {k: np.stack([o[k] for o in outs]) for k in outs[0]}

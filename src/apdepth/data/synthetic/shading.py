"""Shading: procedural textures (hashed value noise), Lambertian lighting with cast shadows and the
camera post-processing (gain, gamma, blur, sensor noise)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import PATTERNS, Material, Scene
from .raycast import _bounding_corners, _bounding_spheres, _cast, _dot, _dot3, _g, _segment_distance

_SHADE_CHUNK = 65536  # pixels shaded per step (a 256x256 image in one step)


_TABLE = None
_TABLE_WRAPPED = None


def _hash_table() -> torch.Tensor:
    # A fixed random table turns lattice hashing into one gather; fixed seed keeps it identical everywhere.
    global _TABLE
    if _TABLE is None:
        _TABLE = torch.from_numpy(np.random.default_rng(20240531).random(_MASK + 1, dtype=np.float32))
    return _TABLE


def _wrapped_table() -> torch.Tensor:
    """The hash table as a 256x256 lattice with its first row and column repeated after the last, flattened
    (257*257,): entry ``y * 257 + x`` is the table's ``(y & 255) * 256 + (x & 255)``, so a lattice cell's four
    corners are four fixed offsets from one index, without wrapping each coordinate."""
    global _TABLE_WRAPPED
    if _TABLE_WRAPPED is None:
        lat = _hash_table().reshape(256, 256)
        lat = torch.cat([lat, lat[:, :1]], 1)
        _TABLE_WRAPPED = torch.cat([lat, lat[:1]], 0).reshape(-1).contiguous()
    return _TABLE_WRAPPED


_P1, _P2, _P3, _P4 = 73856093, 19349663, 83492791, 2654435761
_MASK = (1 << 16) - 1  # a 256 KiB table stays in cache


def _lattice(ix, iy, iz, seed):
    """Hash of integer lattice points (int64 tensors) to floats in [0,1)."""
    return _hash_table().take(((ix * _P1) ^ (iy * _P2) ^ (iz * _P3) ^ (seed * _P4)) & _MASK)


def _value_noise(p, shift):
    """2-D value noise in [0,1]; p (2,M) float (component-first: contiguous rows), shift (2,M) int32 lattice
    offsets (x, y) in [0, 65535] (see :func:`_fbm`).

    The lattice is the 256x256 random table read with wrap-around; each material translates the
    field by a seed-derived offset, so materials get different noise at the cost of one gather each.
    """
    fl = torch.floor(p)
    fr = p - fl
    w = fr * fr * (3 - 2 * fr)
    # Only the lattice coordinates modulo 256 matter: fmod of an integer-valued float is exact, so 32-bit
    # integers (twice the SIMD lanes of 64-bit ones) give the same table indices, whatever the magnitude.
    ii = (torch.fmod(fl, 256.0).to(torch.int32) + shift) & 255
    # the cell's corners: table entries ((y0|y0+1) & 255) * 256 + ((x0|x0+1) & 255), read from the wrapped copy
    c00 = ii[1] * 257 + ii[0]
    c01 = c00 + 1
    c10 = c00 + 257
    c11 = c00 + 258
    table = _wrapped_table()
    wx = w[0]
    top = torch.lerp(table.index_select(0, c00), table.index_select(0, c01), wx)
    bot = torch.lerp(table.index_select(0, c10), table.index_select(0, c11), wx)
    return torch.lerp(top, bot, w[1])


def _noise_shift(seed):
    """(N,) int32 offset in [0, 65535] of the noise field of seeds (N,) int64: the lattice is read at
    ``((x + s) & 255, (y + (s >> 8)) & 255)``. Computed per material and gathered per pixel."""
    return ((seed * 40503) & 0xFFFF).to(torch.int32)


def _fbm(p, shift, footprint, octaves=3):
    """Band-limited fractal noise in [0,1] over 2-D points p (2,M): octaves finer than ~2 pixels fade to
    their mean, which keeps distant surfaces from aliasing into salt-and-pepper noise.
    ``shift`` (M,) int32 from :func:`_noise_shift`; ``footprint`` = pattern units per pixel."""
    shift = torch.stack([shift, shift >> 8])  # (2,M) lattice offsets in x and y
    inv_fp = 1.0 / footprint.clamp_min(1e-9)
    total = None
    norm = 0.0
    for o in range(octaves):
        freq, amp = 2.0**o, 0.5**o
        # (the first octave's "* 1.0 + 0.0" is left out: exact, as a -0.0 made +0.0 gives the same noise)
        lod = ((inv_fp * (1.0 / freq) if o else inv_fp) - 1.0).clamp(0, amp)  # fade-out and amplitude in one clamp
        term = (_value_noise(p * freq + 17.0 * o if o else p, shift) - 0.5) * lod
        total = term if total is None else total + term
        norm += amp
    return total * (1.0 / norm) + 0.5


def _srgb_to_linear(c):
    return c.clamp(0, 1) ** 2.2


def _material_table(materials: list[Material]):
    m = materials
    seed = torch.tensor([x.seed % 1000003 for x in m], dtype=torch.int64)
    a = _srgb_to_linear(torch.tensor([x.color_a for x in m], dtype=torch.float32).reshape(-1, 3))
    b = _srgb_to_linear(torch.tensor([x.color_b for x in m], dtype=torch.float32).reshape(-1, 3))
    return {
        "patterns_used": {PATTERNS.index(x.pattern) for x in m},
        "a": a,
        "b-a": b - a,
        "pattern": torch.tensor([PATTERNS.index(x.pattern) for x in m], dtype=torch.int64),
        "scale": torch.tensor([x.scale for x in m], dtype=torch.float32),
        "dir": torch.nn.functional.normalize(
            torch.tensor([x.direction for x in m], dtype=torch.float32).reshape(-1, 3), dim=-1
        ),
        "grain": torch.tensor([x.grain for x in m], dtype=torch.float32),
        "decal_density": torch.tensor([x.decal_density for x in m], dtype=torch.float32),
        "decal_scale": torch.tensor([x.decal_scale for x in m], dtype=torch.float32),
        "seed": seed,
        "shift": _noise_shift(seed),  # the pattern's noise
        "grain_shift": _noise_shift(seed + 7),  # the grain's noise
    }


def _argmax3(a):
    """``a.argmax(dim=-1)`` for (M,3) without NaN (the first index among equal maxima), about twice as fast."""
    a0, a1, a2 = a.unbind(-1)
    return torch.where((a0 >= a1) & (a0 >= a2), 0, torch.where(a1 >= a2, 1, 2))


def _unit_rows(v):
    """``normalize(v, dim=-1)`` of (K,3) rows: a row's result depends only on that row (not on its place in
    the array), so normalising a primitive table once and gathering gives the same bits as normalising the
    gathered rows, and ``normalize(-v) == -normalize(v)``."""
    return torch.nn.functional.normalize(v.reshape(-1, 3), dim=-1).reshape(v.shape)


def _surface(scene: Scene, x, d, idx):
    """Normals (M,3, unit, facing the viewer), texture-frame points (M,3) and texture axes (M,) int64.

    The texture axis is the one (0, 1 or 2) along which the texture-frame normal (the plane's normal, the
    box's local axis times the side's sign, the sphere's or cylinder's unnormalised normal) is largest in
    magnitude, the first of equal ones (:func:`_argmax3` of its absolute value): the flat patterns span
    the two other axes. It is computed per primitive kind, from the same normals, instead of gathering
    (M,3) normals and reducing them per pixel.

    Each kind's normals are normalised where they are made: planes and boxes from their (small) normalised
    tables, spheres and cylinders for their own pixels; the same values as normalising all (M,3) rows at
    the end, at a fraction of the cost."""
    npl, nb, ns, nc = scene.counts
    p = x.clone()
    k1, k2, k3 = npl, npl + nb, npl + nb + ns  # global index where each primitive kind starts
    # planes' normals for every pixel, gathered from per-primitive tables (zero rows for the other kinds,
    # whose pixels are overwritten below): cheaper than selecting the plane pixels and scattering
    pad = torch.zeros(nb + ns + nc, 3)
    tax = _g(torch.cat([_argmax3(scene.plane_normal.abs()), torch.zeros(nb + ns + nc, dtype=torch.int64)]), idx)
    n = _g(torch.cat([_unit_rows(scene.plane_normal), pad]), idx)
    sel = ((idx >= k1) & (idx < k2)).nonzero().squeeze(1)
    if len(sel):
        j = _g(idx, sel) - k1
        A = _g(scene.box_axes, j)
        rel = _g(x, sel) - _g(scene.box_center, j)
        relc, Ac = rel.t().contiguous(), A.permute(1, 2, 0).contiguous()  # component-first: unit strides
        loc = torch.stack([_dot3(relc, Ac[k]) for k in range(3)], -1)
        q = loc / _g(scene.box_half, j)
        ax = _argmax3(q.abs())
        sign = torch.sign(q.gather(1, ax[:, None]))
        # the normal is the (normalised) local axis of the largest |q|, times its sign: one row gather
        n.index_copy_(0, sel, sign * _g(_unit_rows(scene.box_axes).reshape(-1, 3), j * 3 + ax))
        # the texture-frame normal is one_hot(ax) * sign: its largest magnitude is at ax when sign is +-1;
        # a zero sign gives a zero row (axis 0) and a NaN one a NaN row (no comparison holds: axis 2)
        sign = sign[:, 0]
        tax.index_copy_(0, sel, torch.where(sign == 0, 0, torch.where(sign.isnan(), 2, ax)))
        p.index_copy_(0, sel, loc)
    sel = ((idx >= k2) & (idx < k3)).nonzero().squeeze(1)
    if len(sel):
        j = _g(idx, sel) - k2
        rel = _g(x, sel) - _g(scene.sphere_center, j)
        sn = rel / _g(scene.sphere_radius, j)[:, None]
        n.index_copy_(0, sel, _unit_rows(sn))
        tax.index_copy_(0, sel, _argmax3(sn.abs()))
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
        nn_ = torch.where(
            (side <= torch.minimum(top, bot))[:, None], radial, torch.where((top < bot)[:, None], up, -up)
        )
        n.index_copy_(0, sel, _unit_rows(nn_))
        tax.index_copy_(0, sel, _argmax3(nn_.abs()))
        p.index_copy_(0, sel, rel)
    # facing the viewer: multiplying by -1.0 or 1.0 is an exact negation or copy, cheaper than torch.where;
    # in place per component (a (M,1) factor broadcast over (M,3) rows is not vectorised)
    flip = torch.where(_dot(n, d) > 0, -1.0, 1.0)
    for k in range(3):
        n[:, k].mul_(flip)
    return n, p, tax


def _albedo(mt, idx, p, ax, footprint):
    """Linear-RGB albedo (M,3) from the procedural material of each hit; ``ax`` (M,) the texture axes
    of :func:`_surface`."""
    M = len(idx)
    scale = _g(mt["scale"], idx)
    shift = _g(mt["shift"], idx)  # (M,) int32 noise offsets
    # the points in pattern units, p / scale, per component (elementwise: the same bits as dividing the
    # (M,3) rows by a broadcast (M,1) column, which torch does not vectorise)
    q = [p[:, k] / scale for k in range(3)]
    fp = footprint / scale  # pattern units per pixel
    pat = _g(mt["pattern"], idx)
    val = torch.zeros(M)
    # the two coordinates spanning the surface, for flat 2-D patterns (tiles, checkers)
    u2 = torch.where(ax == 0, q[2], q[0])
    v2 = torch.where(ax == 1, q[2], q[1])
    uv = torch.stack([u2, v2])  # (2,M): noise reads contiguous rows
    base_lod = (0.5 / fp.clamp_min(1e-9) - 1.0).clamp(0, 1)
    live = base_lod > 0
    used = mt["patterns_used"]
    noise_id, plain_id = PATTERNS.index("noise"), PATTERNS.index("plain")
    if used - {noise_id, plain_id}:
        # every pattern but noise and plain is 0.5 + base_lod * (finite value): exactly 0.5 where it has faded out
        val.masked_fill_(~live & (pat != noise_id) & (pat != plain_id), 0.5)
    for pid, name in enumerate(PATTERNS):
        if name == "plain" or pid not in used:  # (no hit has a pattern that no material uses)
            continue
        is_pat = pat == pid
        if name != "noise":
            is_pat &= live
        sel = is_pat.nonzero().squeeze(1)
        if len(sel) == 0:
            continue
        sh, fs, lod, uvs = _g(shift, sel), _g(fp, sel), _g(base_lod, sel), uv.index_select(1, sel)
        if name in ("stripes", "wood", "marble"):  # the patterns that use 3-D points and directions
            qs, ds = torch.stack([_g(qk, sel) for qk in q], 1), _g(mt["dir"], _g(idx, sel))
        if name == "noise":
            v = _fbm(uvs, sh, fs, 4)
            v = ((v - 0.5) * 2.2 + 0.5).clamp(0, 1)
        elif name == "stripes":
            s = _dot(qs, ds) + 0.25 * _fbm(uvs * 0.5, sh, fs * 0.5, 2)
            v = 0.5 + lod * 0.5 * torch.sign(torch.sin(2 * math.pi * s))
        elif name == "checker":
            c = (torch.floor(_g(u2, sel)) + torch.floor(_g(v2, sel))).remainder(2)
            v = 0.5 + lod * (c - 0.5)
        elif name == "wood":
            rel = qs - _dot(qs, ds)[:, None] * ds
            r = rel.norm(dim=-1) * 3.0 + 1.5 * _fbm(uvs * 0.7, sh, fs * 0.7, 2)
            v = 0.5 + lod * ((r - torch.floor(r)) ** 3 - 0.5)
        elif name == "marble":
            s = _dot(qs, ds) * 2.0 + 3.0 * _fbm(uvs, sh, fs, 3)
            v = 0.5 + lod * (torch.abs(torch.sin(math.pi * s)) ** 0.35 - 0.5)
        else:  # tiles / bricks: running bond with mortar lines
            uu, vv = _g(u2, sel), _g(v2, sel) * 2.0
            row = torch.floor(vv)
            uu = uu + 0.5 * row.remainder(2)
            fu, fv = uu - torch.floor(uu), vv - row
            mortar = (torch.minimum(fu, 1 - fu) < 0.04) | (torch.minimum(fv, 1 - fv) < 0.08)
            ss = _g(mt["seed"], _g(idx, sel))
            jitter = _lattice(torch.floor(uu).long(), row.long(), torch.zeros_like(row).long(), ss)
            v = torch.where(mortar, torch.ones_like(uu), 0.25 * jitter)
            v = 0.5 + lod * (v - 0.5)
        val.index_copy_(0, sel, v)
    # a + (b - a) * val (b - a per material: the same differences), the product per component in place
    alb, bv = _g(mt["a"], idx), _g(mt["b-a"], idx)
    for k in range(3):
        bv[:, k].mul_(val)
    alb.add_(bv)
    grain = _g(mt["grain"], idx)
    # grain is one noise octave at 4x the pattern frequency, faded out (a factor of exactly 1) where
    # 1/footprint - 1 <= 0, the same expression as in _fbm
    gsel = ((grain > 0) & (1.0 / (fp * 4.0).clamp_min(1e-9) - 1.0 > 0)).nonzero().squeeze(1)
    if len(gsel) > M // 2:
        # most surfaces have grain: noise for every pixel beats gathering and scattering back; where the
        # grain is 0 the factor is exactly 1 (0 times the finite noise), so those pixels keep their albedo
        gn = _fbm(uv * 4.0, _g(mt["grain_shift"], idx), fp * 4.0, 1)
        factor = 1.0 + grain * 2.0 * (gn - 0.5)  # per pixel, then per component in place
        for k in range(3):
            alb[:, k].mul_(factor)
    elif len(gsel):
        gs = _g(mt["grain_shift"], _g(idx, gsel))
        gn = _fbm(uv.index_select(1, gsel) * 4.0, gs, _g(fp, gsel) * 4.0, 1)
        alb.index_copy_(0, gsel, _g(alb, gsel) * (1.0 + _g(grain, gsel)[:, None] * 2.0 * (gn[:, None] - 0.5)))
    # decals: sparse discs/squares of random colour on a jittered cell grid, sized in metres
    dens = _g(mt["decal_density"], idx)
    dsel = (dens > 0).nonzero().squeeze(1)
    if len(dsel):
        ds = _g(mt["decal_scale"], _g(idx, dsel))
        pc = _g(p, dsel) / ds[:, None]
        cell = torch.floor(pc).long()
        cell_hash = (cell[:, 0] * _P1) ^ (cell[:, 1] * _P2) ^ (cell[:, 2] * _P3)
        sd = _g(mt["seed"], _g(idx, dsel)) + 31
        table = _hash_table()

        def rnd(k, hashes=cell_hash, seeds=sd):
            return table.take((hashes ^ ((seeds + k) * _P4)) & _MASK)

        h = rnd(0)
        fr = pc - torch.floor(pc) - 0.5
        rad = 0.15 + 0.25 * rnd(1)
        square = rnd(2) < 0.5
        dist = torch.where(square, fr.abs().amax(dim=-1), fr.norm(dim=-1))
        on = ((h < _g(dens, dsel)) & (dist < rad) & ((_g(footprint, dsel) / ds) < 0.5)).nonzero().squeeze(1)
        # colours only for the (few) pixels a decal covers; the others keep their albedo
        hs, sds = _g(cell_hash, on), _g(sd, on)
        col = torch.stack([rnd(3 + k, hs, sds) for k in range(3)], -1)
        alb.index_copy_(0, _g(dsel, on), col**2.2 * 0.9 + 0.02)
    return alb.clamp(0, 1)


def _shade(scene: Scene, eye, d, t, idx, hit, focal, dn=None, dnorm=None, bounds=None):
    """Linear shading -> sRGB float (T,S,3) in [0,1]. ``dn``, ``dnorm``: the unit ray directions ``d / |d|``
    and the lengths ``|d|`` (T,S) if known (a row's norm does not depend on its position in the array).
    ``bounds``: the scene's ``(*_bounding_spheres(scene), _bounding_corners(scene))`` if already computed."""
    T, S = t.shape
    out = torch.zeros(T * S, 3)
    lt = scene.lighting
    hit = hit.reshape(-1)
    if scene.sky is not None:
        if dn is None:
            dn = d / d.norm(dim=-1, keepdim=True)
        # the sky only where no primitive is hit (the hits' colours replace it anyway)
        msel = hit.logical_not().nonzero().squeeze(1)
        out.index_copy_(0, msel, _sky(scene.sky, dn.reshape(-1, 3)[:, 1].index_select(0, msel)))
    hsel = hit.nonzero().squeeze(1)
    if len(hsel) == 0:
        return out.reshape(T, S, 3)
    tt = _g(t.reshape(-1), hsel)
    dd = _g(d.reshape(-1, 3), hsel)
    ii = _g(idx.reshape(-1), hsel)
    ll = _g(dnorm.reshape(-1), hsel) if dnorm is not None else None
    mt = _material_table(scene.materials)
    if lt.kind not in ("sun", "point"):
        raise ValueError(f"unknown light kind {lt.kind!r}; use 'sun' or 'point'")
    parts = []
    # shading runs in pixel chunks so that its many temporaries stay in the CPU cache
    for c0 in range(0, len(hsel), _SHADE_CHUNK):
        tc, dc, ic = tt[c0 : c0 + _SHADE_CHUNK], dd[c0 : c0 + _SHADE_CHUNK], ii[c0 : c0 + _SHADE_CHUNK]
        # hit points eye + t * d, per component into (M,3) rows (the same operations per element)
        x = torch.empty(len(tc), 3)
        for k in range(3):
            torch.mul(tc, dc[:, k], out=x[:, k]).add_(eye[k])
        n, p, tax = _surface(scene, x, dc, ic)
        dlen = dc.norm(dim=-1) if ll is None else ll[c0 : c0 + _SHADE_CHUNK]
        footprint = tc * dlen / focal  # metres per pixel along the ray
        # grazing angles stretch the footprint; include it so oblique floors fade rather than alias
        cosv = (-_dot(n, dc) / dlen).clamp(0.05, 1.0)
        alb = _albedo(mt, ic, p, tax, footprint / cosv)
        if lt.kind == "sun":
            L = torch.nn.functional.normalize(torch.tensor(lt.direction, dtype=torch.float32), dim=0)
            atten = torch.ones(len(x))
            lam = _dot(n, L.expand_as(x)).clamp_min(0)
        else:
            tolight = torch.tensor(lt.position, dtype=torch.float32) - x  # (M,3) rows: their norms' bits
            dist = tolight.norm(dim=-1).clamp_min(1e-6)
            atten = 1.0 / (1.0 + (dist / lt.falloff) ** 2)
            # n . (tolight / dist), the direction per component
            lam = _dot3(n.t(), [tolight[:, k] / dist for k in range(3)]).clamp_min(0)
        parts.append((x, n, alb, atten, lam))
    x, n, alb, atten, lam = parts[0] if len(parts) == 1 else (torch.cat(z) for z in zip(*parts))
    vis = torch.ones(len(x))
    if lt.shadows and bool(scene.casts_shadow.any()):
        sun = L if lt.kind == "sun" else None
        vis = _shadow_visibility(scene, x, n, tt, sun, lt, hit.reshape(T, S), hsel, lam, bounds)
    # colour = albedo * (ambient * (0.8 + 0.2 n_y) + light colour * lam * vis * atten), per component (the
    # same operations per element as with broadcast (3,) and (M,1) factors, which torch does not vectorise)
    # into (M,3) rows, then the sRGB encoding on those rows as before (pow's last elements take libm's
    # scalar path, the others SIMD: the array's length and order fix which bits each element gets)
    amb, lcol = torch.tensor(lt.ambient, dtype=torch.float32), torch.tensor(lt.color, dtype=torch.float32)
    base, strength = 0.8 + 0.2 * n[:, 1], lam * vis * atten
    col = torch.empty(len(x), 3)
    for k in range(3):
        light = (amb[k] * base).add_(lcol[k] * strength)
        torch.mul(alb[:, k], light, out=col[:, k])
    col = col.clamp_(0, 1).pow_(1 / 2.2)
    return out.index_copy_(0, hsel, col).reshape(T, S, 3)


def _sky(sky, y):
    """Linear sky colours (K,3) for unit ray directions whose world y component is ``y`` (K,):
    horizon to zenith as y**0.6, the horizon's colour times 0.8 below it."""
    k = len(y)
    yc = y.clamp(0, 1)
    # pow's SIMD path and its scalar one (libm), which torch takes for the last len % 16 (or 32) elements,
    # can differ in the last bit. The sky was computed for whole (T,S) arrays (T*S a multiple of 64: every
    # element on the SIMD path); padding to a multiple of 64 keeps every element there.
    if k % 64:
        yc = torch.cat([yc, yc.new_zeros(64 - k % 64)])
    h = (yc**0.6)[:k]
    hor, zen = torch.tensor(sky[0], dtype=torch.float32), torch.tensor(sky[1], dtype=torch.float32)
    zh, low = zen - hor, hor * 0.8
    below = y < 0
    return torch.stack([torch.where(below, low[c], hor[c] + zh[c] * h) for c in range(3)], 1)


def _shadow_visibility(scene, x, n, tt, sun, lt, hit, hsel, lam, bounds=None):
    """1 where the light is visible from x, 0 where a shadow caster blocks it. Rays are grouped by
    the screen tile of their pixel, so the same tile culling applies (with a bounding sphere of the
    tile's hit points swept towards the light). ``sun``: the unit direction (3,) towards a sun light
    (None for a point light)."""
    T, S = hit.shape
    need = lam > 0  # surfaces facing away are dark anyway
    # ray origins x + n * offset, scattered into the tiles component-first (3,T*S): the tile bounds below and
    # the hit tests read contiguous rows, with no transposed copies; (T,S,3) views of them go to _cast
    off = 2e-3 + 2e-4 * tt
    origin = [x[:, k] + n[:, k] * off for k in range(3)]
    O3 = torch.zeros(3, T * S)
    for k in range(3):
        O3[k].index_copy_(0, hsel, origin[k])
    act = torch.zeros(T * S, dtype=torch.bool)
    act.index_copy_(0, hsel, need)
    if lt.kind == "sun":
        D = sun.reshape(1, 1, 3)
        tmax = math.inf
        far = 1e4
    else:
        lp = torch.tensor(lt.position, dtype=torch.float32)
        D3 = torch.zeros(3, T * S)
        for k in range(3):
            D3[k].index_copy_(0, hsel, lp[k] - origin[k])
        D = D3.reshape(3, T, S).permute(1, 2, 0)
        tmax = 1.0
    O3, act = O3.reshape(3, T, S), act.reshape(T, S)
    O = O3.permute(1, 2, 0)  # (T,S,3) view
    # per-tile bounds of the active origins, reduced along the contiguous last axis
    idle = ~act[None]
    lo = O3.masked_fill(idle, 1e30).amin(dim=-1).t().contiguous()
    hi = O3.masked_fill(idle, -1e30).amax(dim=-1).t().contiguous()
    any_act = act.any(dim=1)
    ctr = torch.where(any_act[:, None], (lo + hi) / 2, torch.zeros_like(lo))
    rad = torch.where(any_act, (hi - lo).norm(dim=-1) / 2, torch.zeros_like(lo[:, 0]))
    if lt.kind == "sun":
        end = ctr + far * sun
    else:
        end = torch.tensor(lt.position, dtype=torch.float32).expand_as(ctr)
    if bounds is None:
        bounds = (*_bounding_spheres(scene), _bounding_corners(scene))
    centers, radii, corners = bounds
    finite = torch.isfinite(radii)
    cand = (~finite & scene.casts_shadow)[None].expand(T, -1).clone()  # infinite casters: everywhere
    cols = (finite & scene.casts_shadow).nonzero().squeeze(1)  # only shadow casters need the distance
    segd = _segment_distance(_g(centers, cols), ctr, end)
    near = segd <= (_g(radii, cols)[None] + rad[:, None] + 1e-3)
    if lt.kind == "sun" and len(cols):
        # Seen along the sun's direction a shadow ray is a point: it can only meet a primitive whose shadow
        # outline contains its origin. Compare the tile's disc of origins with the primitive's enclosing box
        # projected on a plane across the light (its 2-D bounds, widened by 1 cm); far tighter than bounding
        # spheres for long boxes such as buildings.
        L = sun
        e1 = torch.linalg.cross(L, torch.tensor([1.0, 0.0, 0.0] if abs(float(L[0])) < 0.9 else [0.0, 1.0, 0.0]))
        e1 = e1 / e1.norm()
        E = torch.stack([e1, torch.linalg.cross(L, e1)], 1)  # (3,2) orthonormal, both across L
        outline = corners.index_select(0, cols - len(scene.plane_offset)) @ E  # (Nc,8,2)
        lo2, hi2 = outline.amin(dim=1) - 1e-2, outline.amax(dim=1) + 1e-2
        # per axis of the plane, (T,1) against (Nc,) rows: the same comparisons as one (T,Nc,2) broadcast
        c2 = ctr @ E
        c_hi, c_lo, lo2, hi2 = c2 + rad[:, None], c2 - rad[:, None], lo2.t().contiguous(), hi2.t().contiguous()
        for a in range(2):
            near &= (c_hi[:, a : a + 1] >= lo2[a]) & (c_lo[:, a : a + 1] <= hi2[a])
    cand[:, cols] = near
    cand &= any_act[:, None]
    blocked = _cast(scene, O, D, cand, act, any_hit_tmax=tmax)
    return 1.0 - _g(blocked.reshape(-1), hsel).float()


def _post_process(rgb: torch.Tensor, post: dict) -> np.ndarray:
    """Optional camera effects on sRGB float (H,W,3): gain/gamma jitter, 3x3 blur, sensor noise.

    ``rgb`` is not modified. The steps work in place on tensors made here; the gamma's ``pow`` runs on
    the contiguous (H,W,3) array it always had (the element order fixes which elements take pow's scalar
    path for the last len % 16, whose bits can differ from the SIMD path's)."""
    x, own = rgb, False
    if "gain" in post:
        # (H, W*3) rows times the gain repeated W times: the same products as a (3,) gain broadcast over
        # (H,W,3), but along contiguous rows (torch does not vectorise a broadcast over a size-3 last axis)
        h, w = rgb.shape[:2]
        gain = torch.tensor(post["gain"], dtype=torch.float32).repeat(w)
        x, own = (rgb.reshape(h, w * 3) * gain).reshape(h, w, 3), True
    if "gamma" in post:
        x, own = (x.clamp_(0, 1) if own else x.clamp(0, 1)).pow_(float(post["gamma"])), True
    if post.get("blur"):
        k = torch.tensor([0.25, 0.5, 0.25])
        xp = torch.nn.functional.pad(x.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")[0]
        xp = xp[:, :, :-2] * k[0] + xp[:, :, 1:-1] * k[1] + xp[:, :, 2:] * k[2]
        x, own = (xp[:, :-2] * k[0] + xp[:, 1:-1] * k[1] + xp[:, 2:] * k[2]).permute(1, 2, 0), True
    if post.get("noise", 0) > 0:
        # uniform noise with the requested standard deviation: far cheaper to draw than Gaussian
        g = np.random.default_rng(int(post.get("seed", 0)))
        noise = torch.from_numpy(g.random(tuple(x.shape), dtype=np.float32))
        x, own = noise.sub_(0.5).mul_(float(post["noise"]) * 12**0.5).add_(x), True  # x + (u - 0.5) * s
    x = x.clamp_(0, 1) if own else x.clamp(0, 1)
    return x.mul_(255.0).add_(0.5).to(torch.uint8).numpy()

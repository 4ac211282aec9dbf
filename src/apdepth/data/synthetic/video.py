"""Camera trajectories through the procedural scenes: video with exact per-frame depth and poses.

A sequence is scene ``seed`` (the same scene :func:`~.scenes.make_scene` builds for still images) seen by a
camera moving smoothly from the scene's own camera along one of three trajectories:

* ``walk``: forward along the view direction with a sideways sway, a small vertical bob and a slow turn;
* ``pan``: the camera stays in place and turns about the vertical axis (15-30 degrees in total);
* ``dolly``: straight forward (or, for a third of the seeds, backward) along the view direction.

Travel is scaled to the scene: at most 30% of the nearest depth (10th percentile) in the central third of
the first frame, so the camera never runs into what it sees. Everything is seeded: the same arguments
always give the same frames.

Poses are camera-to-world 4x4 matrices with the OpenCV camera frame (x right, y down, z forward), so a
camera-frame point ``X_t`` of frame ``t`` is ``P_s^-1 P_t [X_t; 1]`` in the camera frame of frame ``s``.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import Camera
from .render import render
from .scenes import make_scene

TRAJECTORIES = ("walk", "pan", "dolly")


def _ease(u: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 with zero velocity at both ends (a cosine ramp)."""
    return 0.5 - 0.5 * np.cos(np.pi * u)


def _yaw_about_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def camera_trajectory(
    start: Camera, kind: str, num_frames: int, travel: float, rng: np.random.Generator
) -> list[Camera]:
    """``num_frames`` cameras along trajectory ``kind`` from ``start``; ``travel`` is the largest distance in
    metres the camera may move (see the module docstring)."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {kind!r}; choose one of {', '.join(TRAJECTORIES)}")
    if num_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {num_frames}")
    R0 = np.asarray(start.rotation, np.float64)
    p0 = np.asarray(start.position, np.float64)
    fwd = R0[:, 2].copy()
    fwd_flat = np.array([fwd[0], 0.0, fwd[2]])
    fwd_flat = fwd_flat / max(np.linalg.norm(fwd_flat), 1e-9)
    side = np.cross(fwd_flat, [0.0, 1.0, 0.0])
    u = np.linspace(0.0, 1.0, num_frames)
    cams = []
    if kind == "pan":
        total = math.radians(rng.uniform(15, 30)) * rng.choice([-1, 1])
        for k in range(num_frames):
            cams.append(Camera(tuple(p0), _yaw_about_y(total * _ease(u[k])) @ R0, start.hfov_deg))
    elif kind == "dolly":
        dist = travel * rng.uniform(0.7, 1.0) * (1 if rng.random() < 2 / 3 else -1)
        for k in range(num_frames):
            cams.append(Camera(tuple(p0 + fwd * dist * _ease(u[k])), R0, start.hfov_deg))
    else:  # walk
        dist = travel * rng.uniform(0.7, 1.0)
        sway, sway_f = travel * rng.uniform(0.05, 0.12), rng.uniform(0.7, 1.5)
        bob, bob_f = travel * rng.uniform(0.01, 0.03), rng.uniform(2.0, 3.0)
        turn = math.radians(rng.uniform(-10, 10))
        for k in range(num_frames):
            pos = (
                p0
                + fwd_flat * dist * u[k]
                + side * sway * math.sin(2 * math.pi * sway_f * u[k])
                + np.array([0.0, bob * math.sin(2 * math.pi * bob_f * u[k]), 0.0])
            )
            cams.append(Camera(tuple(pos), _yaw_about_y(turn * _ease(u[k])) @ R0, start.hfov_deg))
    return cams


def pose_matrix(cam: Camera) -> np.ndarray:
    """Camera-to-world 4x4 float64 matrix of ``cam`` (OpenCV camera frame)."""
    P = np.eye(4)
    P[:3, :3] = np.asarray(cam.rotation, np.float64)
    P[:3, 3] = np.asarray(cam.position, np.float64)
    return P


def render_sequence(
    seed: int, num_frames: int, height: int, width: int, scene: str = "mixed", trajectory: str | None = None
) -> dict:
    """Render scene ``seed`` along a camera trajectory.

    Args:
        trajectory: ``walk|pan|dolly``, or ``None`` to pick one from the seed.
    Returns numpy arrays: ``rgb`` (T,H,W,3) uint8; ``depth`` (T,H,W) float32 planar z-depth in metres, 0 where
    invalid; ``valid`` (T,H,W) bool; ``intrinsics`` (3,3) float32 (the same for every frame); ``poses``
    (T,4,4) float64 camera-to-world; plus ``trajectory`` (str).
    """
    scene_obj, cam0 = make_scene(seed, scene)
    rng = np.random.default_rng([int(seed), 7919])  # trajectory randomness, independent of the scene's
    kind = trajectory or TRAJECTORIES[int(rng.integers(len(TRAJECTORIES)))]
    first = render(scene_obj, cam0, int(height), int(width))
    h3, w3 = height // 3, width // 3
    centre = first["depth"][h3 : 2 * h3 + 1, w3 : 2 * w3 + 1]
    cvalid = first["valid"][h3 : 2 * h3 + 1, w3 : 2 * w3 + 1]
    near = float(np.percentile(centre[cvalid], 10)) if cvalid.any() else 2.0
    cams = camera_trajectory(cam0, kind, num_frames, travel=0.3 * near, rng=rng)
    frames = [first] + [render(scene_obj, c, int(height), int(width)) for c in cams[1:]]
    return {
        "rgb": np.stack([f["rgb"] for f in frames]),
        "depth": np.stack([f["depth"] for f in frames]).astype(np.float32),
        "valid": np.stack([f["valid"] for f in frames]),
        "intrinsics": first["intrinsics"],
        "poses": np.stack([pose_matrix(c) for c in cams]),
        "trajectory": kind,
    }


def reproject(depth_s: np.ndarray, K: np.ndarray, pose_s: np.ndarray, pose_t: np.ndarray):
    """Carry frame ``s``'s depth map into frame ``t`` with the true poses.

    For each pixel of frame ``s`` with depth > 0, returns ``(u, v, z)``: float pixel coordinates in frame ``t``
    and the point's z-depth in frame ``t``'s camera, plus the boolean mask (H,W) of the pixels used. The
    caller compares ``z`` with frame ``t``'s depth at ``(u, v)``.
    """
    h, w = depth_s.shape
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    m = depth_s > 0
    z = depth_s[m].astype(np.float64)
    Kinv = np.linalg.inv(K.astype(np.float64))
    rays = Kinv @ np.stack([uu[m], vv[m], np.ones_like(z)])
    X = rays * z  # camera-frame points of frame s, (3, N)
    rel = np.linalg.inv(pose_t) @ pose_s
    Xt = rel[:3, :3] @ X + rel[:3, 3:4]
    proj = K.astype(np.float64) @ Xt
    zt = Xt[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = proj[0] / zt, proj[1] / zt
    return u, v, zt, m

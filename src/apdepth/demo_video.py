"""The web demo's video tab: upload a short clip, get its temporally consistent depth video back.

:func:`process_clip` is the plain-Python core (the same :func:`apdepth.video_depth.process_video` that
``apdepth predict clip.mp4`` runs); :func:`video_tab` adds the tab's components to the demo's Blocks.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

DEFAULT_MAX_SECONDS = 20.0
DEFAULT_MAX_VIDEO_FRAMES = 600


def process_clip(
    pipeline,
    path: str | Path,
    out_dir: str | Path,
    processing_resolution: int | None = None,
    color_map: str = "Spectral",
    consistent: bool = True,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_frames: int = DEFAULT_MAX_VIDEO_FRAMES,
    show_progress: bool = False,
) -> dict:
    """Depth for one uploaded clip, written to ``out_dir``.

    Returns ``{"depth_video", "side_by_side", "stack", "record"}``: paths of ``<stem>_depth.mp4``,
    ``<stem>_depth_sbs.mp4`` (input | depth), ``<stem>_depth.npz`` (float32 (T, H, W) in [0, 1], 0 = near)
    and the ``<stem>_video.json`` record. Raises ``ValueError`` with a message for the user when the file
    is not a readable video or is longer than ``max_seconds`` / ``max_frames``.
    """
    from apdepth.video import VideoSource
    from apdepth.video_depth import DEPTH_VIDEO_SUFFIX, SBS_VIDEO_SUFFIX, VideoOutputOptions, process_video

    path = Path(path)
    source = VideoSource(path)  # VideoReadError is a ValueError naming the file
    info = source.info
    duration = info.duration_s if info.duration_s is not None else (info.num_frames or 0) / info.fps
    if duration > max_seconds + 1e-6 or (info.num_frames or 0) > max_frames:
        raise ValueError(
            f"{path.name}: the clip is {duration:.1f} s long ({info.num_frames} frames); "
            f"this demo takes clips up to {max_seconds:g} s and {max_frames} frames"
        )
    source.max_frames = max_frames
    stem = _stem(path.name)
    opts = VideoOutputOptions(color_map=color_map, side_by_side=True, stack="npz", png_frames=False)
    record = process_video(
        pipeline,
        source,
        out_dir,
        stem,
        opts,
        processing_resolution=processing_resolution,
        batch_size=4,
        consistent=consistent,
        show_progress=show_progress,
    )
    out_dir = Path(out_dir)
    return {
        "depth_video": out_dir / f"{stem}{DEPTH_VIDEO_SUFFIX}",
        "side_by_side": out_dir / f"{stem}{SBS_VIDEO_SUFFIX}",
        "stack": out_dir / f"{stem}_depth.npz",
        "record": record,
    }


def _stem(name: str) -> str:
    import re

    return (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "clip")[:80]


def video_tab(pipeline, work_root: Path, default_res: int, color_maps, max_seconds: float = DEFAULT_MAX_SECONDS):
    """Add the video tab's components and handler to the enclosing ``gr.Blocks`` (call inside ``gr.Tab``)."""
    import gradio as gr

    from apdepth.video import VIDEO_EXTENSIONS

    def on_run(file, resolution, cmap, consistent, progress=gr.Progress()):
        if not file:
            raise gr.Error("Upload a video clip first.", print_exception=False)
        path = getattr(file, "name", file)
        out_dir = Path(tempfile.mkdtemp(prefix="video-", dir=work_root))
        t0 = time.perf_counter()
        progress(0.05, desc="Estimating depth")
        try:
            res = process_clip(
                pipeline,
                path,
                out_dir,
                processing_resolution=int(resolution),
                color_map=cmap,
                consistent=bool(consistent),
                max_seconds=max_seconds,
            )
        except ValueError as err:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # a stack trace helps the operator, not the visitor
            traceback.print_exc(file=sys.stderr)
            shutil.rmtree(out_dir, ignore_errors=True)
            raise gr.Error(f"Depth estimation failed: {type(err).__name__}: {err}", print_exception=False) from None
        r = res["record"]
        status = (
            f"**{r['frames']} frames** ({r['width']}×{r['height']}, {r['fps']:.3g} fps) in "
            f"{time.perf_counter() - t0:.1f} s ({r['frames_per_s']:.2f} frames/s); "
            f"{'temporally consistent' if r['consistent'] else 'per-frame'} depth."
        )
        return str(res["side_by_side"]), [str(res["depth_video"]), str(res["stack"])], status

    gr.Markdown(
        f"Upload a short clip (up to {max_seconds:g} s). Each frame's depth is co-aligned with its "
        "neighbours so that the clip does not flicker; the result comes back next to the input."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            clip = gr.File(
                label="Video clip", file_types=list(VIDEO_EXTENSIONS), elem_id="apdepth-video-input", height=140
            )
            resolution = gr.Slider(0, 1024, value=default_res, step=8, label="Processing resolution (px, 0 = native)")
            cmap = gr.Dropdown(list(color_maps), value="Spectral", label="Colour map")
            consistent = gr.Checkbox(value=True, label="Temporally consistent (co-align and smooth frames)")
            run_btn = gr.Button("Estimate video depth", variant="primary", elem_id="apdepth-video-run")
            status = gr.Markdown(elem_id="apdepth-video-status")
        with gr.Column(scale=3, min_width=400):
            video = gr.Video(label="Input | depth", interactive=False, elem_id="apdepth-video-output", height=360)
            downloads = gr.File(
                label="Downloads: depth video (.mp4), float32 (T,H,W) stack in [0,1] (.npz)",
                file_count="multiple",
                interactive=False,
                elem_id="apdepth-video-downloads",
            )
    run_btn.click(
        on_run, inputs=[clip, resolution, cmap, consistent], outputs=[video, downloads, status], concurrency_limit=1
    )

"""``apdepth predict`` for clips: the command-line side of :mod:`apdepth.video_depth` (its options, and the run
over video files or, with ``--video``, folders of frames). Kept apart from the library module so that the
pipeline's ``predict_video`` never imports the command layer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apdepth.temporal import SMOOTHING_MODES
from apdepth.video import VideoReadError, VideoSource, is_video_file
from apdepth.video_depth import (
    DEFAULT_SMOOTHING,
    DEFAULT_SMOOTHING_STRENGTH,
    DEPTH_VIDEO_SUFFIX,
    RECORD_SUFFIX,
    SBS_VIDEO_SUFFIX,
    VideoOutputOptions,
    check_smoothing,
    process_video,
    video_output_paths,
)


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """The ``apdepth predict`` options for clips (added to its parser)."""
    g = p.add_argument_group("video (inputs that are video files, or folders of frames with --video)")
    g.add_argument(
        "--video", action="store_true", help="treat each folder input as the frames of one clip (natural order)"
    )
    g.add_argument(
        "--fps", type=float, default=None, help="frame rate of frame folders (default 30); video files keep their own"
    )
    g.add_argument("--side-by-side", action="store_true", help="also write <stem>_depth_sbs.mp4: input | depth")
    g.add_argument(
        "--stack",
        default="npy",
        choices=["npy", "npz", "none"],
        help="float32 (T,H,W) depth stack <stem>_depth.npy/.npz in [0,1], 0 = near (default npy)",
    )
    g.add_argument("--png-frames", action="store_true", help="also write 16-bit PNG frames to <stem>_depth_frames/")
    g.add_argument(
        "--per-frame",
        action="store_true",
        help="naive per-frame depth (each frame normalised on its own) instead of the temporally consistent clip",
    )
    g.add_argument(
        "--flow",
        default="dis",
        choices=["dis", "none"],
        help="pair pixels between frames by optical flow (dis, default) or by position (none: static camera)",
    )
    g.add_argument(
        "--temporal-smoothing",
        default=None,
        choices=list(SMOOTHING_MODES),
        help=f"flow-guided temporal filter on the co-aligned clip (default {DEFAULT_SMOOTHING}; none with --per-frame)",
    )
    g.add_argument(
        "--smoothing-strength",
        type=float,
        default=None,
        help=f"weight of the tracked history in [0, 1) (default {DEFAULT_SMOOTHING_STRENGTH}; 0 = no smoothing)",
    )
    g.add_argument(
        "--no-travel-correction",
        dest="travel_correction",
        action="store_const",
        const=False,
        default=None,
        help="do not add the camera's travel along its axis, estimated from the optical flow, to the consistent "
        "clip (by default a dolly or walk forward makes static depths fall, as they do)",
    )


def wants_video(args: argparse.Namespace) -> bool:
    """True when ``apdepth predict`` should run the video path: ``--video`` or any input is a video file."""
    return bool(getattr(args, "video", False)) or any(is_video_file(s) and not Path(s).is_dir() for s in args.inputs)


def video_only_options(args: argparse.Namespace) -> list[str]:
    """The clip-only options (temporal smoothing) given explicitly, as their flags; ``apdepth predict`` refuses
    them for image inputs rather than ignoring them."""
    given = [
        ("--temporal-smoothing", "temporal_smoothing"),
        ("--smoothing-strength", "smoothing_strength"),
        ("--no-travel-correction", "travel_correction"),
    ]
    return [flag for flag, name in given if getattr(args, name, None) is not None]


def run_video(args: argparse.Namespace) -> int:
    """``apdepth predict`` for clips: each input is a video file (or, with ``--video``, a folder of frames)."""
    from apdepth.image_io import atomic_write

    color_map = None if str(args.color_map).lower() == "none" else args.color_map
    stack = None if args.stack == "none" else args.stack
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.fps is not None and not args.fps > 0:
        print("error: --fps must be > 0", file=sys.stderr)
        return 2
    if args.processing_res is not None and args.processing_res < 0:
        print("error: --processing-res must be >= 0 (0 = native size)", file=sys.stderr)
        return 2
    if args.smoothing_strength is not None and (args.per_frame or args.temporal_smoothing == "none"):
        why = "--per-frame (the naive output is not smoothed)" if args.per_frame else "--temporal-smoothing none"
        print(f"error: --smoothing-strength has no effect with {why}", file=sys.stderr)
        return 2
    if getattr(args, "travel_correction", None) is False and (args.per_frame or args.flow == "none"):
        why = (
            "--per-frame (the naive output is not co-aligned)"
            if args.per_frame
            else "--flow none (no flow to measure it)"
        )
        print(f"error: --no-travel-correction has no effect with {why}", file=sys.stderr)
        return 2
    strength = DEFAULT_SMOOTHING_STRENGTH if args.smoothing_strength is None else args.smoothing_strength
    try:
        smoothing = check_smoothing(args.temporal_smoothing, strength, consistent=not args.per_frame)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unsupported = [
        name
        for name, flag in (("--save-ply", "save_ply"), ("--ensemble-size", "ensemble_size"))
        if getattr(args, flag, None) not in (None, False, 1)
    ]
    if unsupported:
        print(f"error: {', '.join(unsupported)} is not supported for video inputs", file=sys.stderr)
        return 2
    opts = VideoOutputOptions(
        color_map=color_map, side_by_side=args.side_by_side, stack=stack, png_frames=args.png_frames
    )
    if color_map:
        import matplotlib

        if color_map not in matplotlib.colormaps:
            print(f"error: unknown --color-map {color_map!r} (any matplotlib colour map, or 'none')", file=sys.stderr)
            return 2
    out_dir = Path(args.output)
    failed: dict[str, str] = {}
    ignored: dict[str, str] = {}
    clips: list[tuple[str, str]] = []  # (input, stem)
    stems: dict[str, str] = {}
    for spec in args.inputs:
        p = Path(spec)
        if _earlier_output(p):
            ignored[spec] = "written by apdepth (an earlier run's output), not an input"
        elif p.is_dir() and not args.video:
            failed[spec] = "a folder next to video inputs: pass --video to read it as the frames of one clip"
        elif not p.exists():
            failed[spec] = "no such file or folder"
        elif p.is_file() and not is_video_file(p):
            failed[spec] = (
                f"not a video file (expected one of {', '.join(sorted(set(_exts())))}); images and clips go in separate runs"
            )
        else:
            stem = p.name if p.is_dir() else p.stem
            if stem in stems:
                print(
                    f"error: {stems[stem]} and {spec} would write the same outputs ({stem}_depth.*); rename one",
                    file=sys.stderr,
                )
                return 2
            stems[stem] = spec
            clips.append((spec, stem))
    done, skipped = [], []
    todo = []
    for spec, stem in clips:
        if args.skip_existing and all(q.exists() for q in video_output_paths(out_dir, stem, opts)):
            skipped.append(spec)
        else:
            todo.append((spec, stem))
    records = {}
    if todo:
        from apdepth.runtime import load_pipeline, model_options

        try:
            pipe = load_pipeline(
                **model_options(args),
                compile=args.compile,
                compile_mode=args.compile_mode,
                cuda_graphs=args.cuda_graphs,
                vae_tiling=args.vae_tiling,
                quiet=args.quiet,
            )
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for spec, stem in todo:
            try:
                source = VideoSource(spec, fps=args.fps)
                records[spec] = process_video(
                    pipe,
                    source,
                    out_dir,
                    stem,
                    opts,
                    processing_resolution=args.processing_res,
                    batch_size=args.batch_size,
                    consistent=not args.per_frame,
                    flow=None if args.flow == "none" else args.flow,
                    show_progress=not args.quiet,
                    smoothing=smoothing,
                    smoothing_strength=strength,
                    travel_correction=getattr(args, "travel_correction", None) is not False,
                )
                done.append(spec)
            except VideoReadError as err:
                failed[spec] = str(err).split(": ", 1)[-1] if str(err).startswith(spec) else str(err)
                print(f"failed: {err}", file=sys.stderr)
    print(f"done: {len(done)}  skipped: {len(skipped)}  failed: {len(failed)}  ->  {out_dir}")
    for spec in done:
        r = records[spec]
        print(
            f"  {spec}: {r['frames']} frames {r['width']}x{r['height']} at {r['fps']:.3g} fps, {r['frames_per_s']:.2f} frames/s"
        )
    for name, reason in sorted(failed.items()):
        print(f"  failed: {name}: {reason}")
    if ignored:
        print(f"  ignored {len(ignored)} earlier output(s) (see predict_summary.json)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "predict_summary.json", "w") as fh:
        json.dump(
            {
                "done": sorted(done),
                "skipped": sorted(skipped),
                "failed": failed,
                "ignored": ignored,
                "world_size": 1,
                "done_per_rank": {"0": len(done)},
            },
            fh,
            indent=1,
        )
    return 1 if failed else 0


def _earlier_output(path: Path) -> bool:
    """True for a depth or side-by-side video that :func:`process_video` wrote (``<stem>_depth.mp4``,
    ``<stem>_depth_sbs.mp4`` next to that run's ``<stem>_video.json``), so that rerunning on a glob of an
    output folder that is also the input folder does not take the outputs for new clips."""
    if not path.is_file() or path.suffix.lower() != ".mp4":
        return False
    for tail in (SBS_VIDEO_SUFFIX, DEPTH_VIDEO_SUFFIX):
        if path.name.endswith(tail) and len(path.name) > len(tail):
            return (path.parent / f"{path.name[: -len(tail)]}{RECORD_SUFFIX}").is_file()
    return False


def _exts():
    from apdepth.video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS

"""Start the web demo on localhost: upload images, see depth, the prior's depth and a 3D point cloud.

The page runs the same :class:`~apdepth.pipeline.ApDepthPipeline` as ``apdepth predict`` and colours
depth with the one visualiser, :func:`apdepth.visualize.colorize_depth`, so what the demo shows is what
the command line writes. It listens on 127.0.0.1 by default and never creates a public share link.

Per image it offers for download the 16-bit depth PNG (value / 65535 = affine-invariant depth in
[0, 1], 0 = near), the float32 ``.npy`` of the same, the colour PNG and a coloured point cloud as
binary PLY (at most 2 M points). The point cloud needs a metric-like depth: the demo maps ``d`` in [0, 1] to
``1 + d * (ratio - 1)`` with the user's far/near ratio (see :mod:`apdepth.pointcloud`).

``build_demo(pipeline)`` returns the ``gr.Blocks`` app, so tests launch it with a tiny model;
``process_images`` is the plain-Python core behind the button.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_MAX_IMAGES = 8
DEFAULT_MAX_MEGAPIXELS = 40.0
DEFAULT_MAX_FILE_SIZE = "50mb"
DISPLAY_MAX_POINTS = 250_000  # the browser viewer slows down beyond this
# The PLY download is subsampled to at most this many points (15 bytes each: about 30 MB); one point per pixel of
# a 6000x4000 photo was a 343 MB file per upload.
DEFAULT_MAX_PLY_POINTS = 2_000_000
COLOR_MAPS = ("Spectral", "Spectral_r", "magma", "inferno", "viridis", "plasma", "turbo", "gray", "gray_r")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
_OUTPUT_TTL_S = 900.0  # a request's outputs are removed on a later request after this long, and on exit
# Gradio's own copies of uploads and outputs: every 5 minutes, remove those older than 15 (and all on exit).
GRADIO_DELETE_CACHE = (300, 900)

CSS = """
#apdepth-header h1 {margin-bottom: 0.2em;}
#apdepth-header p {margin-top: 0; opacity: 0.8;}
"""


@dataclass
class DemoResult:
    """What the page shows and offers for one input image (all paths are files on the server)."""

    name: str
    shape: tuple[int, int]
    rgb_path: Path
    colored_path: Path
    prior_colored_path: Path | None
    glb_path: Path
    downloads: list[Path] = field(default_factory=list)
    n_points: int = 0


class DemoResults(list):
    """The :class:`DemoResult` of every image that worked, plus ``failed``: ``{upload name: reason}`` for the
    ones that did not (a bad file never blocks the good ones)."""

    def __init__(self, results=(), failed: dict[str, str] | None = None):
        super().__init__(results)
        self.failed: dict[str, str] = dict(failed or {})


def model_description(pipeline) -> str:
    """One Markdown line saying which model runs; for the bundled small model, what to expect and how to load
    the published weights instead."""
    source = getattr(pipeline, "loaded_from", None)
    if not source:
        return "**Model:** a pipeline passed in from Python."
    if source.get("bundled"):
        return (
            "**Model: the bundled small model**, trained only on this project's synthetic scenes so that the "
            "demo works offline. On real photos it recovers a coarse layout and blurs object edges; that is "
            "the model, not your photo. For the published paper weights (internet needed once), restart with "
            "`apdepth demo --checkpoint developy/ApDepth --prior depth-anything/Depth-Anything-V2-Small-hf`."
        )
    prior = f", prior `{source['prior']}`" if source.get("prior") else ""
    return f"**Model:** `{source['checkpoint']}`{prior}."


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return stem[:80]


def load_upload(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Read one uploaded image as RGB float32 (H, W, 3) in [0, 1].

    Raises ``ValueError`` with a message fit for the user (naming the file by its upload name)
    when the file is not a readable image or has more than ``max_megapixels`` million pixels.
    The pixel count is checked from the header before anything is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    from apdepth.image_io import ImageReadError, read_image

    path = Path(path)
    name = path.name
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: image is too large ({err})") from err
    except UnidentifiedImageError as err:
        raise ValueError(f"{name}: not a recognised image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: cannot read the image ({err})") from err
    mp = w * h / 1e6
    if mp > max_megapixels:
        raise ValueError(f"{name}: {w}x{h} is {mp:.1f} megapixels; the demo accepts at most {max_megapixels:g}")
    try:
        return read_image(path)
    except ImageReadError as err:
        # read_image names the server-side path; the user only knows the upload name
        raise ValueError(f"{name}: {str(err).split(': ', 1)[-1]}") from err


def _cleanup_old(root: Path, ttl_s: float = _OUTPUT_TTL_S) -> None:
    now = time.time()
    for child in root.iterdir() if root.exists() else ():
        try:
            if child.is_dir() and now - child.stat().st_mtime > ttl_s:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass


DISPLAY_MAX_SIDE = 2048  # the input shown in the comparison slider (display only, never a download)


def _display_copy(rgb8: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 image no larger than ``max_side`` on its longer side, for display."""
    from PIL import Image

    h, w = rgb8.shape[:2]
    if max(h, w) <= max_side:
        return rgb8
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb8).resize(size, Image.BILINEAR))


def _display_cloud(depth_z: np.ndarray, rgb: np.ndarray, fov_deg: float, max_points: int):
    """Unproject a strided copy of the depth so the browser gets at most ~``max_points`` points."""
    from apdepth.pointcloud import depth_to_points, focal_from_fov

    h, w = depth_z.shape
    step = max(1, math.ceil(math.sqrt(h * w / max_points)))
    # the focal length shrinks with the stride so the subsampled cloud has the same geometry
    focal = focal_from_fov(w, fov_deg) / step
    return depth_to_points(depth_z[::step, ::step], rgb[::step, ::step], focal=focal)


def process_images(
    pipeline,
    paths: list[str | Path],
    out_dir: str | Path,
    processing_resolution: int | None = None,
    color_map: str = "Spectral",
    fov_deg: float = 60.0,
    far_near_ratio: float = 10.0,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress=None,
    max_ply_points: int = DEFAULT_MAX_PLY_POINTS,
) -> DemoResults:
    """Run the pipeline on uploaded image files and write everything the page shows.

    ``processing_resolution``: longer side in px the model runs at (None = the model's stored
    default, 0 = native). ``fov_deg``: horizontal field of view assumed for the point cloud;
    ``far_near_ratio`` (> 1): depth 0 is placed at 1 and depth 1 at this value. ``progress`` is
    an optional callable ``progress(fraction, desc=...)`` (e.g. ``gr.Progress``).

    All inputs are read before any inference, so a bad file costs no compute. A file that cannot be read or
    whose inference fails is listed in the result's ``failed`` (``{upload name: reason}``) and the others are
    processed; ``ValueError`` is raised (naming every file) only when no image works, or for a bad request
    (no files, too many, bad settings). The PLY download holds at most ``max_ply_points`` points (a
    regular subsample of the pixels).
    """
    from apdepth.image_io import save_depth_outputs, save_png
    from apdepth.pointcloud import relative_to_metric, save_depth_ply, write_glb_points
    from apdepth.visualize import colorize_depth

    paths = [Path(p) for p in (paths or [])]
    if not paths:
        raise ValueError("Upload at least one image first.")
    if len(paths) > max_images:
        raise ValueError(f"{len(paths)} images uploaded; the demo takes at most {max_images} at a time.")
    if processing_resolution is not None and int(processing_resolution) < 0:
        raise ValueError("Processing resolution must be >= 0 (0 = native size).")
    if not (far_near_ratio > 1.0 and math.isfinite(far_near_ratio)):
        raise ValueError(f"The far/near ratio must be > 1, got {far_near_ratio}.")
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"The field of view must be between 0 and 180 degrees, got {fov_deg}.")
    import matplotlib

    if color_map not in matplotlib.colormaps:
        raise ValueError(f"Unknown colour map {color_map!r}.")

    failed: dict[str, str] = {}
    readable: list[tuple[Path, np.ndarray]] = []
    for p in paths:
        try:
            readable.append((p, load_upload(p, max_megapixels)))
        except ValueError as err:
            failed[p.name] = str(err).split(": ", 1)[-1] if str(err).startswith(f"{p.name}: ") else str(err)
    if not readable:
        raise ValueError("; ".join(f"{name}: {reason}" for name, reason in failed.items()))
    out_dir = Path(out_dir)
    want_prior = getattr(pipeline, "prior", None) is not None
    results = DemoResults(failed=failed)
    used: set[str] = set()
    for i, (path, rgb01) in enumerate(readable):
        if progress is not None:
            progress(i / len(readable), desc=f"Estimating depth: {path.name} ({i + 1}/{len(readable)})")
        stem = _safe_stem(path.name)
        base, k = stem, 1
        while stem in used:  # two uploads called image.png must not overwrite each other
            k += 1
            stem = f"{base}_{k}"
        used.add(stem)
        try:
            out = pipeline(
                rgb01, processing_resolution=processing_resolution, output_type="np", output_prior=want_prior
            )
        except (RuntimeError, ValueError) as err:
            results.failed[path.name] = f"depth estimation failed ({err})"
            continue
        depth = np.asarray(out.depth[0], dtype=np.float32)
        prior = None if out.prior_depth is None else np.asarray(out.prior_depth[0], dtype=np.float32)

        rgb8 = (np.clip(rgb01, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        rgb_path = out_dir / f"{stem}_input.png"
        save_png(rgb_path, _display_copy(rgb8))
        npy, png16, colored = save_depth_outputs(out_dir, stem, depth, color_map=color_map)
        prior_path = None
        if prior is not None:
            prior_path = out_dir / f"{stem}_prior_colored.png"
            save_png(prior_path, colorize_depth(prior, cmap=color_map))
        ply_path = out_dir / f"{stem}.ply"
        step = max(1, math.ceil(math.sqrt(depth.size / max_ply_points)))  # a regular subsample keeps the geometry
        n_points = save_depth_ply(
            ply_path, depth[::step, ::step], rgb8[::step, ::step], fov_deg=fov_deg, near=1.0, far=far_near_ratio
        )
        pts, cols = _display_cloud(relative_to_metric(depth, 1.0, far_near_ratio), rgb8, fov_deg, DISPLAY_MAX_POINTS)
        glb_path = write_glb_points(out_dir / f"{stem}_view.glb", pts, cols)
        results.append(
            DemoResult(
                name=path.name,
                shape=depth.shape,
                rgb_path=rgb_path,
                colored_path=colored,
                prior_colored_path=prior_path,
                glb_path=glb_path,
                downloads=[png16, npy, colored, ply_path],
                n_points=n_points,
            )
        )
    if not results:
        raise ValueError("; ".join(f"{name}: {reason}" for name, reason in results.failed.items()))
    if progress is not None:
        progress(1.0, desc="Done")
    return results


def _device_label(pipeline) -> str:
    dev = getattr(pipeline, "device", None)
    return str(dev) if dev is not None else "?"


def build_demo(
    pipeline,
    *,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    examples_dir: str | Path | None = EXAMPLES_DIR,
    work_dir: str | Path | None = None,
):
    """Build the Gradio app around ``pipeline`` (any object with the ApDepthPipeline call API).

    ``work_dir`` receives one sub-folder of outputs per request (default: a fresh folder in the
    system temp dir); folders older than 15 minutes are removed on later requests, and at exit the demo
    removes its folders (the whole default folder). Gradio's copies are removed after 15 minutes too. Launch the result
    with :func:`launch` so that theme, upload limit and the no-share policy apply.
    """
    import gradio as gr

    from apdepth.image_io import IMAGE_EXTENSIONS

    own_root = work_dir is None
    work_root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="apdepth-demo-"))
    work_root.mkdir(parents=True, exist_ok=True)

    built: dict = {}

    def cleanup() -> None:
        """Remove this demo's outputs: the whole work folder if the demo made it, else its run-* folders, and
        the copies Gradio keeps of uploads and outputs (also when the server did not shut down cleanly)."""
        if own_root:
            shutil.rmtree(work_root, ignore_errors=True)
        else:
            for run in work_root.glob("run-*"):
                shutil.rmtree(run, ignore_errors=True)
        for files in getattr(built.get("demo"), "temp_file_sets", ()):
            for name in list(files):
                with contextlib.suppress(OSError):
                    os.remove(name)
            files.clear()

    atexit.register(cleanup)
    config = getattr(pipeline, "config", None)
    default_res = int(getattr(config, "processing_resolution", 768) or 0)
    has_prior = getattr(pipeline, "prior", None) is not None

    def view(results: list[dict], name: str | None):
        """Outputs for the one result picked in the selector."""
        pick = next((r for r in results if r["name"] == name), results[0] if results else None)
        if pick is None:
            return None, None, None
        return (pick["rgb"], pick["colored"]), pick["prior"], pick["glb"]

    def on_run(files, resolution, cmap, fov, ratio, progress=gr.Progress()):
        paths = [getattr(f, "name", f) for f in (files or [])]
        _cleanup_old(work_root)
        out_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
        t0 = time.perf_counter()
        try:
            results = process_images(
                pipeline,
                paths,
                out_dir,
                processing_resolution=int(resolution),
                color_map=cmap,
                fov_deg=float(fov),
                far_near_ratio=float(ratio),
                max_images=max_images,
                max_megapixels=max_megapixels,
                progress=progress,
            )
        except ValueError as err:
            shutil.rmtree(out_dir, ignore_errors=True)
            # duration=None: the message stays until closed (the default vanished after 10 s, leaving a bare badge)
            raise gr.Error(str(err), duration=None, print_exception=False) from None
        except Exception as err:  # a stack trace helps the operator, not the visitor
            traceback.print_exc(file=sys.stderr)
            shutil.rmtree(out_dir, ignore_errors=True)
            raise gr.Error(
                f"Depth estimation failed: {type(err).__name__}: {err}", duration=None, print_exception=False
            ) from None
        seconds = time.perf_counter() - t0
        state = [
            {
                "name": r.name,
                "rgb": str(r.rgb_path),
                "colored": str(r.colored_path),
                "prior": str(r.prior_colored_path) if r.prior_colored_path else None,
                "glb": str(r.glb_path),
            }
            for r in results
        ]
        downloads = [str(p) for r in results for p in r.downloads]
        names = [r.name for r in results]
        h, w = results[0].shape
        status = (
            f"**{len(results)} image{'s' if len(results) > 1 else ''}** in {seconds:.1f} s on "
            f"`{_device_label(pipeline)}`, processing resolution {int(resolution) or 'native'}; "
            f"first image {w}×{h} px, {results[0].n_points:,} points in its PLY."
        )
        if results.failed:
            lines = "\n".join(f"- {name}: {reason}" for name, reason in results.failed.items())
            status += f"\n\n**Not processed ({len(results.failed)}):**\n{lines}"
            gr.Warning(
                f"{len(results.failed)} of {len(paths)} files could not be processed: "
                + "; ".join(f"{n}: {r}" for n, r in results.failed.items()),
                duration=None,
            )
        slider, prior_img, glb = view(state, names[0])
        return (
            slider,
            prior_img,
            glb,
            downloads,
            state,
            gr.update(choices=names, value=names[0], visible=len(names) > 1),
            status,
        )

    with gr.Blocks(title="ApDepth demo", delete_cache=GRADIO_DELETE_CACHE) as demo:
        state = gr.State([])
        gr.Markdown(
            "# ApDepth: monocular depth estimation\n"
            "Upload one or more photos to get their depth from a single diffusion step conditioned on a "
            "depth prior. Depth is *relative*: 0 = near, 1 = far, with unknown scale and shift.\n\n"
            + model_description(pipeline),
            elem_id="apdepth-header",
        )
        with gr.Tab("Images"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=300):
                    files = gr.File(
                        label="Images",
                        file_count="multiple",
                        file_types=list(IMAGE_EXTENSIONS),
                        elem_id="apdepth-input",
                        height=180,
                    )
                    resolution = gr.Slider(
                        0,
                        2048,
                        value=default_res,
                        step=8,
                        label="Processing resolution (px, 0 = native)",
                        info="Longer side the model runs at; higher is sharper and slower.",
                    )
                    cmap = gr.Dropdown(
                        list(COLOR_MAPS), value="Spectral", label="Colour map", info="Spectral: red = near, blue = far."
                    )
                    with gr.Accordion("Point cloud", open=False):
                        fov = gr.Slider(20, 120, value=60, step=1, label="Horizontal field of view (degrees)")
                        ratio = gr.Slider(
                            1.5,
                            50,
                            value=10,
                            step=0.5,
                            label="Far / near depth ratio",
                            info="Relative depth has no scale; this sets how deep the 3D view looks.",
                        )
                    run_btn = gr.Button("Estimate depth", variant="primary", elem_id="apdepth-run")
                    status = gr.Markdown(elem_id="apdepth-status")
                    ex_dir = Path(examples_dir) if examples_dir is not None else None
                    if ex_dir is not None and ex_dir.is_dir():
                        ex = sorted(p for p in ex_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
                        if ex:
                            gr.Examples([[[str(p)]] for p in ex], inputs=[files], label="Examples")
                with gr.Column(scale=3, min_width=400):
                    pick = gr.Dropdown([], label="Show result for", visible=False, elem_id="apdepth-pick")
                    with gr.Row():
                        slider = gr.ImageSlider(
                            label="Image | depth (drag to compare)",
                            type="filepath",
                            format="png",
                            elem_id="apdepth-slider",
                            scale=3,
                            height=340,
                        )
                        prior_img = gr.Image(
                            label="Prior's depth",
                            type="filepath",
                            format="png",
                            interactive=False,
                            elem_id="apdepth-prior",
                            visible=has_prior,
                            scale=2,
                            height=340,
                        )
                    model3d = gr.Model3D(
                        label="Point cloud (drag to rotate, scroll to zoom)",
                        display_mode="point_cloud",
                        camera_position=(90, 90, None),
                        height=420,
                        elem_id="apdepth-3d",
                    )
                    downloads = gr.File(
                        label="Downloads: 16-bit PNG (value/65535), .npy (float32 [0,1]), colour PNG, PLY point cloud",
                        file_count="multiple",
                        interactive=False,
                        elem_id="apdepth-downloads",
                    )

            run_btn.click(
                on_run,
                inputs=[files, resolution, cmap, fov, ratio],
                outputs=[slider, prior_img, model3d, downloads, state, pick, status],
                concurrency_limit=1,  # one model, one device: requests queue instead of competing for memory
            )
            pick.change(view, inputs=[state, pick], outputs=[slider, prior_img, model3d])
        with gr.Tab("Video"):
            from apdepth.demo_video import video_tab

            video_tab(pipeline, work_root, default_res, COLOR_MAPS)
    built["demo"] = demo
    demo.apdepth_work_dir = work_root
    demo.apdepth_cleanup = cleanup
    return demo


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(
    demo,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    *,
    block: bool = True,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    quiet: bool = False,
):
    """Serve ``demo`` on ``host:port`` with the project's theme; sharing is always off."""
    import gradio as gr

    if not _is_loopback(host):
        print(f"warning: the demo listens on {host}, reachable from other machines; it has no login.", file=sys.stderr)
    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")
    return demo.queue(max_size=32).launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        max_file_size=max_file_size,
        theme=theme,
        css=CSS,
        ssr_mode=False,
        quiet=quiet,
        footer_links=["gradio"],
        inbrowser=False,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    from apdepth.runtime import add_model_arguments

    add_model_arguments(p)
    p.add_argument(
        "--max-images", type=int, default=DEFAULT_MAX_IMAGES, help="images per request (default %(default)s)"
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="largest accepted image in millions of pixels (default %(default)s)",
    )
    p.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="largest upload (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the demo needs gradio: pip install 'apdepth[demo]'", file=sys.stderr)
        return 2
    if args.max_images < 1 or args.max_megapixels <= 0:
        print("error: --max-images and --max-megapixels must be positive", file=sys.stderr)
        return 2
    from apdepth.runtime import load_pipeline, model_options

    try:
        pipe = load_pipeline(**model_options(args))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = pipe._execution_device
    demo = build_demo(pipe, max_images=args.max_images, max_megapixels=args.max_megapixels)
    # gradio's own banner suggests share=True, which this command never does; print a plain line instead
    print(f"ApDepth demo on http://{args.host}:{args.port}/ (device {device}); press Ctrl+C to stop", flush=True)
    launch(demo, args.host, args.port, max_file_size=args.max_file_size, quiet=True)
    return 0

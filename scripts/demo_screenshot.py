"""Take the screenshot of the web demo shown in the docs: start `apdepth demo` with a model on
localhost, upload an image in headless Chromium, wait for the result and save a full-page PNG.

    python scripts/demo_screenshot.py --image assets/examples/synthetic_room_a.png --output docs/images/demo.png

Needs the `browser` extra and Debian's chromium (scripts/install_browser_deps.sh).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--checkpoint", default=None, help="default: the bundled model")
    p.add_argument("--chromium", default=os.environ.get("APDEPTH_CHROMIUM", "/usr/bin/chromium"))
    args = p.parse_args(argv)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from apdepth.demo import build_demo, launch
    from apdepth.pipeline import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(args.checkpoint)
    pipe.enable_channels_last()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo(pipe, work_dir=tempfile.mkdtemp(prefix="apdepth-demo-"))
    launch(demo, "127.0.0.1", port, block=False, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
            page.set_default_timeout(180_000)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.locator("#apdepth-input input[type=file]").set_input_files(args.image)
            page.get_by_text(Path(args.image).name).first.wait_for()
            page.locator("#apdepth-run").click()
            page.wait_for_function("document.querySelectorAll('#apdepth-downloads a').length >= 4")
            page.wait_for_timeout(3000)  # let the 3D view draw
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

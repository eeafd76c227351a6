"""Screenshot Rerun's own web viewer showing a recording, in headless Chromium (software WebGL).

    python scripts/screenshot_rerun_web.py out/ivlm_bag_demo/ivlm_bag_demo.rrd docs/rerun_web_viewer.png

Serves the ``.rrd`` with ``rerun --web-viewer`` (the web viewer shipped in the rerun-sdk wheel, bound to
127.0.0.1), opens it in headless Chromium (Debian package ``chromium``) with SwiftShader as the WebGL
implementation (no GPU needed) and saves the page as PNG. A page still showing the viewer's loading screen is
retried with a longer wait. Nothing here draws the picture: every pixel is the viewer's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # runs as root in containers
    "--use-angle=swiftshader",  # software WebGL: no GPU on build machines
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Rerun web viewer did not listen on port {port} within {timeout_s:.0f} s")


def looks_loaded(png: Path) -> bool:
    """The viewer's UI (light panels, the image) rather than its dark loading screen or a blank page."""
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    return bool((pixels > 200).mean() > 0.2 and pixels.std() > 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rrd", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", default="1600,900", help="window size W,H in pixels")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--attempts", type=int, default=4)
    args = parser.parse_args()
    rerun = Path(sys.executable).with_name("rerun")
    if not rerun.exists():
        print("rerun not found next to this Python: pip install -r requirements-viz.txt", file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print("chromium not found: sudo apt-get install chromium (Debian package)", file=sys.stderr)
        return 2
    web_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [str(rerun), str(args.rrd), "--web-viewer", "--bind", "127.0.0.1", "--web-viewer-port", str(web_port),
         "--port", str(grpc_port), "--renderer", "webgl"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "BROWSER": "true"},
    )  # fmt: skip
    try:
        wait_for_port(web_port, 30)
        viewer_url = urllib.parse.quote(f"rerun+http://127.0.0.1:{grpc_port}/proxy", safe="")
        page = f"http://127.0.0.1:{web_port}/?url={viewer_url}&renderer=webgl"
        args.png.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            for attempt in range(args.attempts):
                budget_ms = 20000 * 2**attempt
                subprocess.run(
                    [args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={args.size}",
                     f"--virtual-time-budget={budget_ms}", f"--screenshot={args.png}", page],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120 + budget_ms / 1000, check=False,
                )  # fmt: skip
                if args.png.exists() and looks_loaded(args.png):
                    print(f"[screenshot] {args.png} (Rerun web viewer, {page})")
                    return 0
                print(f"[screenshot] attempt {attempt + 1}: viewer still loading; waiting longer", file=sys.stderr)
        print("[screenshot] the web viewer did not finish loading in headless Chromium", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())

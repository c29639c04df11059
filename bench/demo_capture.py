"""Truth-capture generator speed: the compiled rasterizer against the Embree ray caster it replaced.

    python bench/demo_capture.py [--frames 24] [--width 3840 --height 2160] [--workers 2]

Side by side in one process, on the same posed head, cameras, background and frame size, each
writing a Kinect-like MKV of `--frames` frames through `demo.capture.write_kinect_mkv` (the
generator's own render + JPEG + mux loop, `--workers` threads):
  before_fps  one Embree ray per pixel of the head's box (demo.truth_render.render_head_raycast)
              and numpy texturing, on a fresh copy of the 4K background every frame (the old
              TruthRenderer);
  after_fps   the z-buffer rasterizer (numba, demo.truth_render.render_head) on one working frame
              per thread, only the last head box restored (the current TruthRenderer);
  jpeg_fps    the JPEG encode alone of as many 4K frames on the same threads (the floor: the
              generator cannot beat its encoder);
  speedup     after_fps / before_fps;
  demo_s      2 subjects x 2 songs x 21 s x 30 fps at after_fps: the rendering part of
              `make demo`'s capture, on this machine as loaded now.
The timings are only comparable within one run (the machine may be shared); the ratio is the result.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.capture import (encode_jpeg, plan_capture, song_audio, studio_background,  # noqa: E402
                          write_kinect_mkv)
from demo.scan import procedural_head_model  # noqa: E402
from demo.truth_capture import SONG_S, TruthRenderer, make_subject, song_geometry  # noqa: E402
from demo.truth_render import render_head_raycast  # noqa: E402

FPS = 30


class RaycastRenderer(TruthRenderer):
    """The old TruthRenderer: a full background copy and an Embree ray per head-box pixel each frame."""

    def render(self, t: int) -> np.ndarray:
        frame = self.bg.copy()
        render_head_raycast(frame, self.vertices[t], self.faces, self.head, self.cams[t])
        return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    W, H, n = args.width, args.height, args.frames

    model = procedural_head_model()
    subj = plan_capture(1, 1, 0)[0]
    song = subj["songs"][0]
    subject = make_subject(model, 0, 0, 1024)
    background = studio_background(W, H, 0)
    frames = int(round(SONG_S * FPS))
    loud = song_audio(song, frames, FPS)[-1]
    motion, verts, cams, _, _ = song_geometry(model, subject.shape, subject.face_height, loud, song["seed"],
                                              frames, FPS, W, H)
    take = np.arange(n) * max(frames // 2 // n, 1)         # frames spread over the first half (face in view)
    faces = np.asarray(model.faces.numpy(), np.int64)
    args_r = (background, verts[take], faces, subject.head, cams[take], motion["path"])
    fast, slow = TruthRenderer(*args_r), RaycastRenderer(*args_r)
    fast.render(0)                                          # compile (cached on disk after the first run)

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, renderer in (("before", slow), ("after", fast)):
            t0 = time.perf_counter()
            write_kinect_mkv(Path(tmp) / f"{name}.mkv", renderer, n, FPS, W, H, song["seed"],
                             workers=args.workers)
            rates[name] = n / (time.perf_counter() - t0)
            print(f"{name}: {rates[name]:.2f} frames/s", flush=True)
    img = fast.render(n // 2).copy()
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda _: encode_jpeg(img), range(n)))
    jpeg = n / (time.perf_counter() - t0)
    demo_frames = 2 * 2 * frames
    print(f"BENCH demo_capture width={W} height={H} frames={n} workers={args.workers} "
          f"before_fps={rates['before']:.2f} after_fps={rates['after']:.2f} jpeg_fps={jpeg:.2f} "
          f"speedup={rates['after'] / rates['before']:.1f} demo_s={demo_frames / rates['after']:.0f}")


if __name__ == "__main__":
    main()

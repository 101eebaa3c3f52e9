"""How far apart two videos of the same run settings are, pixel by pixel (e.g. int8 vs float32).

    python scripts/video_diff.py runs/q/fp32.mp4 runs/q/int8.mp4

Prints the frame count, PSNR over the whole video and of the worst frame, and the mean absolute
difference in 0-255 levels. Both videos must have the same size and frame count.
"""

from __future__ import annotations

import argparse
import json

import imageio.v3 as iio
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    a = iio.imread(args.a).astype(np.float64)
    b = iio.imread(args.b).astype(np.float64)
    if a.shape != b.shape:
        raise SystemExit(f"error: {args.a} is {a.shape} but {args.b} is {b.shape}")
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))

    def psnr(m: float) -> float:
        return float("inf") if m == 0 else 10 * np.log10(255**2 / m)

    print(json.dumps({"frames": len(a), "psnr_db": round(psnr(mse.mean()), 2),
                      "worst_frame_psnr_db": round(psnr(mse.max()), 2), "worst_frame": int(mse.argmax()),
                      "mean_abs_diff": round(float(np.abs(a - b).mean()), 3)}))


if __name__ == "__main__":
    main()

"""Render a point cloud written by `stereodeploy infer` (``<name>.ply``) as a small PNG, for the README.

    stereodeploy infer ../shared/data/kitti2015/training/image_2/000005_10.png \\
        ../shared/data/kitti2015/training/image_3/000005_10.png --postprocess full --preset kitti2015 \\
        --max-disp 228 --calib ../shared/data/kitti2015/notes/000005_10_Calib_excerpt.txt --out /tmp/cloud
    python scripts/render_point_cloud.py /tmp/cloud/000005_10.ply docs/point_cloud.png

Needs matplotlib (not a dependency of the package). The points are drawn from an oblique viewpoint above and
behind the camera, nearer than ``--max-depth`` metres, a random subset of ``--points``; the picture is stored with
a 128-colour palette to stay small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def render(ply: Path, out: Path, max_depth: float, points: int, seed: int = 0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from stereodeploy.data.io import atomic_write, read_ply

    xyz, rgb = read_ply(ply)
    keep = xyz[:, 2] < max_depth
    xyz, rgb = xyz[keep], (rgb[keep] if rgb is not None else None)
    pick = np.random.default_rng(seed).permutation(len(xyz))[:points]
    xyz = xyz[pick]
    colours = rgb[pick] / 255.0 if rgb is not None else xyz[:, 2]
    fig = plt.figure(figsize=(7.2, 3.9), dpi=100)
    ax = fig.add_subplot(projection="3d")
    # camera frame: x right, y down, z forward -> plot (x, z, -y) so that up is up
    ax.scatter(xyz[:, 0], xyz[:, 2], -xyz[:, 1], c=colours, s=1.5, marker=".", linewidths=0, depthshade=False)
    ax.view_init(elev=22, azim=-70)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.pane.set_visible(False)
    ax.set_xlabel("x (m)", labelpad=-6)
    ax.set_ylabel("z, forward (m)", labelpad=-4)
    ax.set_zlabel("up (m)", labelpad=-8)
    ax.tick_params(labelsize=7, pad=-2)
    ax.set_box_aspect((np.ptp(xyz[:, 0]), np.ptp(xyz[:, 2]), np.ptp(xyz[:, 1])), zoom=1.4)
    ax.set_title(f"{ply.stem}: {int(keep.sum()):,} of {len(keep):,} points within {max_depth:g} m ({len(xyz):,} drawn)", fontsize=9)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.93)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    with atomic_write(out, overwrite=True) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ply", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-depth", type=float, default=40.0)
    parser.add_argument("--points", type=int, default=120_000)
    args = parser.parse_args()
    path = render(args.ply, args.out, args.max_depth, args.points)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()

"""Export the seed paper's Atari policy nets and a Nature-DQN to ONNX files.

Seed nets (Khachatourian 2019): Conv(1,n1,3) - ReLU - Conv(n1,n2,3) - ReLU - Linear - Softmax for
n1/n2 in 20/40, 40/80, 80/160, on the red channel subsampled by 2 (D2, 105x80) or 4 (D4, 53x40).
Nature-DQN: a stack of the last 4 grayscale 84x84 frames; with --mark-stack its metadata declares
the frame stack, so reuserun splits its first conv into per-frame partials without being told
(at 84x84 that costs more bookkeeping than it saves; see the README).

    python tools/export_policies.py --out models/ --actions 6
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reuserun import zoo

SIZES = {2: (105, 80), 4: (53, 40)}
FILTERS = ((20, 40), (40, 80), (80, 160))


def export_all(out: Path, actions: int, seed: int = 0, mark_stack: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for d, (h, w) in SIZES.items():
        for n1, n2 in FILTERS:
            path = out / f"seed_policy_d{d}_{n1}_{n2}.onnx"
            path.write_bytes(zoo.atari_policy(n1, n2, h, w, actions, seed).SerializeToString())
            paths.append(path)
    dqn = zoo.nature_dqn(4, 84, actions, seed)
    if mark_stack:
        dqn.metadata_props.add(key="reuserun.frame_stack", value="true")
    path = out / "nature_dqn_4x84.onnx"
    path.write_bytes(dqn.SerializeToString())
    paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models")
    p.add_argument("--actions", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mark-stack", action="store_true", help="declare the DQN input a frame stack")
    args = p.parse_args(argv)
    for path in export_all(Path(args.out), args.actions, args.seed, args.mark_stack):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

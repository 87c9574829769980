"""Real fixed-camera footage for the benchmarks: OpenCV's vtest.avi (people walking through a
hall, filmed by a camera on a stand, 768x576, 795 frames, MPEG-4 part 2), as Debian ships it in
the package opencv-doc. Fetched with `apt-get download` into a temporary folder and extracted
with dpkg-deb; nothing is installed.

    python tools/footage.py                 # writes ~/.cache/reuserun/footage/vtest.avi
    python tools/footage.py --out DIR

Prints the file's path and sha256. Fails with a one-line message where apt-get or dpkg-deb is
missing (not a Debian-based machine) or the package cannot be fetched.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT = Path("~/.cache/reuserun/footage").expanduser()
PACKAGE = "opencv-doc"
MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def fetch(out: Path) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: the footage comes from Debian's {PACKAGE} package")
    out.mkdir(parents=True, exist_ok=True)
    target = out / Path(MEMBER).name
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if not debs:
            last = (got.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"apt-get download {PACKAGE} failed: {last}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True)
        shutil.copyfile(Path(tmp) / "x" / MEMBER, target)
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="default %(default)s")
    args = p.parse_args(argv)
    try:
        path = fetch(Path(args.out).expanduser())
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"footage: {e}", file=sys.stderr)
        return 1
    print(path, hashlib.sha256(path.read_bytes()).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-knowledge benchmark: entity-level erasure requests about facts SmolLM2-135M-Instruct really knows,
each through the ladder's tier defaults (engine/bench_real.py), the result kept in bench/results/real.md.

    .venv/bin/python bench/real.py                       # every request, tiers 1-3, quick verification
    .venv/bin/python bench/real.py --tiers 3 --requests 3
    .venv/bin/python bench/real.py --tune                # per-tier tuning, once it is in this build

The same as `expunge bench real --out bench/results/real.md`."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# First on the path: this script's own folder holds a console.py that would shadow the console package.
sys.path.insert(0, str(REPO))

from console.cli.bench import bench_real  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", str(REPO / "bench" / "results" / "real.md")]
    bench_real.main(args=args, prog_name="bench/real.py")

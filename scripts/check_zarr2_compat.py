"""Check that a store written by `sim2real render` opens with zarr 2 the way Diffusion Policy's
`ReplayBuffer.copy_from_path` opens it (both its numpy and its in-memory-zarr backends).

    python scripts/check_zarr2_compat.py /tmp/s.zarr [--venv /tmp/sim2real-gym-pusht-venv]

zarr 2 cannot share our venv (we run zarr 3), so the reading happens in a separate venv (the one
`scripts/bench_render.py` makes), with `zarr<3` installed into it on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# Runs under zarr 2: the calls Diffusion Policy's ReplayBuffer makes, written out.
READER = r"""
import json, sys
import numpy as np, zarr
assert zarr.__version__.startswith("2."), zarr.__version__
path = sys.argv[1]
group = zarr.open(path, "r")                      # copy_from_path
src_root = zarr.group(group.store)                # copy_from_store
# numpy backend (store=None)
meta = {k: (np.array(v) if len(v.shape) == 0 else v[:]) for k, v in src_root["meta"].items()}
data = {k: src_root["data"][k][:] for k in ["img", "state", "action"]}   # PushTImageDataset's keys
ends = meta["episode_ends"]
for k, v in data.items():                          # ReplayBuffer.__init__'s check
    assert v[: ends[-1]].shape[0] == ends[-1], k
# in-memory zarr backend: copy chunks without recompression
store = zarr.MemoryStore()
root = zarr.group(store=store)
zarr.copy_store(source=group.store, dest=store, source_path="/meta", dest_path="/meta", if_exists="replace")
root.create_group("data", overwrite=True)
for k in src_root["data"].keys():
    zarr.copy_store(source=group.store, dest=store, source_path="/data/" + k, dest_path="/data/" + k, if_exists="replace")
mem = zarr.group(store=store)
assert np.array_equal(mem["data/img"][:], data["img"])
print(json.dumps({
    "zarr": zarr.__version__,
    "episodes": int(len(ends)),
    "frames": int(ends[-1]),
    "arrays": {k: [list(v.shape), str(v.dtype), list(v.chunks), v.compressor.codec_id] for k, v in src_root["data"].arrays()},
    "agent_pos_first": [float(x) for x in data["state"][0, :2]],
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument(
        "--venv", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sim2real-gym-pusht-venv"
    )
    args = ap.parse_args()
    py = args.venv / "bin" / "python"
    if not py.exists():
        import venv

        venv.create(args.venv, with_pip=True)
    if subprocess.run(
        [str(py), "-c", "import zarr; assert zarr.__version__ < '3'"], capture_output=True
    ).returncode:
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["zarr<3", "numcodecs<0.16", "numpy"], check=True)
    out = subprocess.run([str(py), "-c", READER, str(args.store)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"zarr 2 could not read {args.store}:\n{out.stderr}")
    print(out.stdout.strip().splitlines()[-1])

    # the same frames through our own reader
    import numpy as np

    from sim2real.data import open_replay

    ours = open_replay(args.store)
    first = np.asarray(ours.data["state"][0, :2]).tolist()
    theirs = json.loads(out.stdout.strip().splitlines()[-1])["agent_pos_first"]
    assert np.allclose(first, theirs), (first, theirs)
    print("ok: zarr 2 (Diffusion Policy's ReplayBuffer calls) and sim2real.data agree")


if __name__ == "__main__":
    main()

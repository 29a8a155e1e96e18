"""Zarr replay stores in Diffusion Policy's layout (zarr format 2, Blosc, time-chunked).

    store/
      data/img        (N, H, W, 3) uint8      data/mask (N, H, W) uint8
      data/state      (N, 5) float32          data/action (N, 2) float32
      data/keypoint   (N, 9, 2) float32       data/n_contacts (N, 1) float32
      meta/episode_ends (E,) int64            exclusive end index of each episode
      .zattrs         appearance, seed, sim parameters, package version, provenance

`meta/episode_ends` is the single source of truth: `ReplayWriter.append_episode` writes the data
arrays first and extends `episode_ends` last, so a crash leaves at most some frames past
`episode_ends[-1]`, which readers ignore and the next writer overwrites.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError

logger = logging.getLogger(__name__)

# Known arrays: (trailing shape or None when image-sized, dtype). Other keys are allowed.
LAYOUT: dict[str, tuple[tuple | None, str]] = {
    "img": (None, "uint8"),
    "mask": (None, "uint8"),
    "state": ((5,), "float32"),
    "action": ((2,), "float32"),
    "keypoint": ((9, 2), "float32"),
    "n_contacts": ((1,), "float32"),
}


def _compressor():
    import numcodecs

    return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)


def _chunks(shape: tuple, chunk_frames: int) -> tuple:
    """Images, masks and keypoints are chunked `chunk_frames` frames at a time; (N, D) arrays 8× longer."""
    t = chunk_frames if len(shape) >= 3 else chunk_frames * 8
    return (t,) + tuple(shape[1:])


class ReplayWriter:
    """Append whole episodes to a zarr format-2 replay store.

    `ReplayWriter(path, attrs)` creates a new store (refusing to replace one unless `overwrite`);
    `ReplayWriter.resume(path)` reopens one and continues after its last complete episode.
    """

    def __init__(
        self,
        path: str | Path,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        chunk_frames: int = 128,
    ):
        import zarr

        self.path = Path(path)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1; got {chunk_frames=}")
        if self.path.exists() and not overwrite:
            raise Sim2RealError(f"{self.path} exists; pass --overwrite to replace it")
        self.chunk_frames = chunk_frames
        try:
            self.root = zarr.open_group(str(self.path), mode="w", zarr_format=2)
        except OSError as e:
            raise Sim2RealError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.root.require_group("data")
        meta = self.root.require_group("meta")
        meta.create_array(
            "episode_ends", shape=(0,), chunks=(4096,), dtype="int64", compressors=_compressor()
        )
        self.root.attrs.update(dict(attrs or {}))
        self._ends = np.zeros((0,), np.int64)

    @classmethod
    def resume(cls, path: str | Path) -> ReplayWriter:
        """Reopen an existing store for appending; frames past the last complete episode are dropped."""
        import zarr

        store = open_replay(path, require=())
        self = cls.__new__(cls)
        self.path = Path(path)
        self.root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        self._ends = store.episode_ends.copy()
        data = self.root["data"]
        first = next(iter(data.array_values()), None)
        self.chunk_frames = int(first.chunks[0]) if first is not None else 128
        n = self.n_frames
        for name, arr in data.arrays():
            if arr.shape[0] != n:
                logger.info(
                    "%s: dropping %d frames of data/%s past the last complete episode",
                    path,
                    arr.shape[0] - n,
                    name,
                )
                arr.resize((n,) + arr.shape[1:])
        return self

    # ---- writing ------------------------------------------------------------------------------
    def append_episode(self, episode: Mapping[str, np.ndarray]) -> None:
        """Write one episode ({key: (T, …) array}, all the same T ≥ 1) and then publish it."""
        lengths = {k: len(v) for k, v in episode.items()}
        if not lengths or len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
            raise ValueError(f"an episode needs arrays of one common length >= 1; got {lengths}")
        data = self.root["data"]
        existing = set(data.array_keys())
        if existing and existing != set(episode):
            raise ValueError(f"episode keys {sorted(episode)} differ from the store's {sorted(existing)}")
        n, t = self.n_frames, next(iter(lengths.values()))
        for key, value in episode.items():
            value = np.asarray(value)
            if key not in existing:
                shape = (0,) + value.shape[1:]
                data.create_array(
                    key,
                    shape=shape,
                    chunks=_chunks(value.shape, self.chunk_frames),
                    dtype=value.dtype,
                    compressors=_compressor(),
                )
            arr = data[key]
            if arr.shape[1:] != value.shape[1:]:
                raise ValueError(
                    f"data/{key}: frame shape {value.shape[1:]} differs from the store's {arr.shape[1:]}"
                )
            arr.resize((n + t,) + arr.shape[1:])
            arr[n : n + t] = value.astype(arr.dtype, copy=False)
        # publish last: until this write, readers see the store without this episode
        ends = self.root["meta/episode_ends"]
        ends.resize((len(self._ends) + 1,))
        ends[len(self._ends)] = n + t
        self._ends = np.append(self._ends, n + t)

    @property
    def attrs(self) -> dict:
        return dict(self.root.attrs)

    def update_attrs(self, **attrs: Any) -> None:
        self.root.attrs.update(attrs)

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()


class _Trimmed:
    """A zarr array seen only up to `n` frames (the last complete episode)."""

    def __init__(self, arr, n: int):
        self.arr, self.n = arr, n
        self.shape = (n,) + tuple(arr.shape[1:])
        self.dtype = arr.dtype
        self.chunks = arr.chunks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        if self.n == self.arr.shape[0]:
            return self.arr[idx]
        first, rest = (idx[0], idx[1:]) if isinstance(idx, tuple) and idx else (idx, ())
        if isinstance(first, slice):
            first = slice(*first.indices(self.n))
        elif isinstance(first, (int, np.integer)):
            first = range(self.n)[first]
        else:
            return self.arr[: self.n][idx]
        return self.arr[(first,) + tuple(rest)]

    def __array__(self, dtype=None, copy=None):
        out = self.arr[: self.n]
        return out if dtype is None else out.astype(dtype)


class ReplayStore:
    """A validated read-only view of a replay store (see `open_replay`)."""

    def __init__(self, path: Path, root, episode_ends: np.ndarray):
        self.path, self.root = path, root
        self.episode_ends = episode_ends
        n = self.n_frames
        self.data = {k: _Trimmed(a, n) for k, a in root["data"].arrays()}
        self.attrs = dict(root.attrs)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def episode_slice(self, i: int) -> slice:
        i = range(self.n_episodes)[i]
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def get_episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        sl = self.episode_slice(i)
        return {k: self.data[k][sl] for k in (keys or self.data)}

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}{tuple(a.shape)}" for k, a in self.data.items())
        return f"ReplayStore({self.path}, {self.n_episodes} episodes, {self.n_frames} frames: {arrays})"


def open_replay(path: str | Path, require: Iterable[str] = ("img", "state", "action")) -> ReplayStore:
    """Open and validate a replay store; raises Sim2RealError naming the missing or odd array."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise Sim2RealError(f"no replay store at {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as e:  # zarr raises several types for "not a group"
        raise Sim2RealError(f"{path} is not a zarr group ({type(e).__name__})") from e
    for group in ("data", "meta"):
        if group not in root:
            raise Sim2RealError(f"{path}: missing group '{group}/' (not a Diffusion Policy replay store)")
    if "episode_ends" not in root["meta"]:
        raise Sim2RealError(f"{path}: missing array 'meta/episode_ends'")
    ends = np.asarray(root["meta/episode_ends"][:])
    if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise Sim2RealError(
            f"{path}: meta/episode_ends must be a 1-D integer array; got {ends.dtype} {ends.shape}"
        )
    if len(ends) and (ends[0] < 1 or np.any(np.diff(ends) < 1)):
        raise Sim2RealError(f"{path}: meta/episode_ends must be strictly increasing and positive")
    ends = ends.astype(np.int64)
    n = int(ends[-1]) if len(ends) else 0
    data = root["data"]
    keys = set(data.array_keys())
    missing = [k for k in require if k not in keys]
    if missing:
        raise Sim2RealError(f"{path}: missing array(s) {', '.join('data/' + k for k in missing)}")
    img_hw = None
    for key in sorted(keys):
        arr = data[key]
        if arr.shape[0] < n:
            raise Sim2RealError(
                f"{path}: data/{key} has {arr.shape[0]} frames but meta/episode_ends ends at {n}"
            )
        if key in LAYOUT:
            _check_layout(path, key, arr, img_hw)
            if key == "img":
                img_hw = tuple(arr.shape[1:3])
    return ReplayStore(path, root, ends)


def _check_layout(path: Path, key: str, arr, img_hw) -> None:
    trailing, dtype = LAYOUT[key]
    if np.dtype(arr.dtype) != np.dtype(dtype):
        raise Sim2RealError(f"{path}: data/{key} must be {dtype}; got {arr.dtype}")
    shape = tuple(arr.shape[1:])
    if key == "img":
        ok = len(shape) == 3 and shape[2] == 3
        want = "(N, H, W, 3)"
    elif key == "mask":
        ok = len(shape) == 2 and (img_hw is None or shape == img_hw)
        want = "(N, H, W) matching data/img"
    else:
        ok, want = shape == trailing, f"(N, {', '.join(map(str, trailing))})"
    if not ok:
        raise Sim2RealError(f"{path}: data/{key} must be {want}; got {tuple(arr.shape)}")

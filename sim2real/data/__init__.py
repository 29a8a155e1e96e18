"""The shared data layer: zarr replay stores (Diffusion Policy layout) and reference-image loading.

from sim2real.data import ReplayWriter, open_replay, load_images
"""

from sim2real.data.images import load_images
from sim2real.data.replay import ReplayStore, ReplayWriter, open_replay

__all__ = ["ReplayStore", "ReplayWriter", "load_images", "open_replay"]

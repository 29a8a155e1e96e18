"""Semantic score: does the edited region look like the masked region of the real (style) frames?

Paper Eq. 9, with D = 1 − cosine of encoder embeddings, reduced over the reference frames:

    sem = reduce_r D(f(m_in ⊙ I_gen), f(m_sty,r ⊙ I_sty,r)) + λ · mean((1 − m_in) ⊙ (I_in − I_gen)²)

Images in [0, 1]; λ = 0.05 in the paper (0.5 in SPIE's code). Lower is better.

Encoders share one interface, `embed(images uint8 (B, H, W, 3), masks bool (B, H, W)) -> (B, D)`:

| name      | what | weights |
|-----------|------|---------|
| `texture` | masked Lab colour + multi-scale filter-bank statistics (`texture.py`); the default | none |
| `dreamsim`| the `dreamsim` package (optional extra; needs torchvision) | files in `cache_dir` |
| `dinov2`  | transformers `Dinov2Model`, CLS token | local folder |
| `clip`    | transformers `CLIPVisionModelWithProjection`, image embedding | local folder |

Network encoders see `m ⊙ I` (pixels outside the mask set to 0, as in the paper), resized to the
model's input size. Asking for a backend whose weights are absent is an error, never a fallback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.errors import Sim2RealError
from sim2real.feedback._checks import as_images, as_masks, same_batch
from sim2real.feedback.texture import TextureEncoder, TextureEncoderConfig

logger = logging.getLogger(__name__)

EncoderName = Literal["texture", "dreamsim", "dinov2", "clip"]
ENCODERS: tuple[str, ...] = ("texture", "dreamsim", "dinov2", "clip")

# What `dreamsim(pretrained=True, cache_dir=D)` (ensemble type) reads from D, so nothing is downloaded.
DREAMSIM_FILES: tuple[str, ...] = (
    "dino_vitb16_pretrain.pth",
    "clip_vitb16_pretrain.pth.tar",
    "open_clip_vitb16_pretrain.pth.tar",
    "ensemble_lora/",
    "facebookresearch_dino_main/",
    "checkpoints/dino_vitbase16_pretrain.pth",
)


class Encoder(Protocol):
    name: str

    def embed(self, images: Any, masks: Any) -> np.ndarray:
        """uint8 `(B, H, W, 3)` + bool `(B, H, W)` → float32 `(B, D)`."""
        ...


def _masked_tensor(images: Any, masks: Any, size: int, mean=None, std=None) -> torch.Tensor:
    """m ⊙ I resized to `(B, 3, size, size)`, optionally normalised with mean/std."""
    x = as_images(images, "images")
    m = as_masks(masks, "masks")
    same_batch(x, m, "images vs masks")
    t = torch.from_numpy(x * m[..., None]).permute(0, 3, 1, 2)  # (B, 3, H, W) in [0, 1]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    if mean is not None:
        t = (t - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]
    return t


class DreamSimEncoder:
    """Adapter around a DreamSim model: `model.embed((B, 3, 224, 224) in [0, 1]) -> (B, D)`.

    Build with `DreamSimEncoder.from_cache(cache_dir)` (imports `dreamsim` lazily, checks the files
    first) or pass any object with an `embed` method (tests use a stand-in).
    """

    name = "dreamsim"

    def __init__(self, model: Any, device: str = "cpu", size: int = 224):
        if not hasattr(model, "embed"):
            raise Sim2RealError("a DreamSim model must have an .embed(images) method")
        self.model, self.device, self.size = model, device, size

    @classmethod
    def from_cache(cls, cache_dir: str | Path | None, device: str = "cpu") -> DreamSimEncoder:
        if cache_dir is None:
            raise Sim2RealError(
                "encoder 'dreamsim' needs a weights folder: set encoder_path=DIR holding "
                + ", ".join(DREAMSIM_FILES)
            )
        cache_dir = Path(cache_dir).expanduser()
        missing = [f for f in DREAMSIM_FILES if not (cache_dir / f.rstrip("/")).exists()]
        if missing:
            raise Sim2RealError(f"DreamSim weights missing: place {', '.join(missing)} in {cache_dir}")
        try:
            from dreamsim import dreamsim
        except Exception as e:  # ImportError, or torchvision failing to import next to CPU torch
            raise Sim2RealError(
                f"encoder 'dreamsim' needs the optional package (pip install 'sim2real[dreamsim]' in an env "
                f"with a torchvision that matches torch): {type(e).__name__}: {e}"
            ) from e
        model, _ = dreamsim(pretrained=True, cache_dir=str(cache_dir), device=device)
        return cls(model, device=device)

    @torch.no_grad()
    def embed(self, images: Any, masks: Any) -> np.ndarray:
        t = _masked_tensor(images, masks, self.size).to(self.device)
        return self.model.embed(t).float().cpu().numpy()


class TransformersImageEncoder:
    """DINOv2 (CLS token) or CLIP (projected image embedding) from a local transformers folder."""

    _DEFAULT_STATS = {
        "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    }

    def __init__(
        self, kind: Literal["dinov2", "clip"], model: Any, size: int, mean=None, std=None, device="cpu"
    ):
        self.name = kind
        self.model = model.to(device).eval()
        self.size, self.device = size, device
        dm, ds = self._DEFAULT_STATS[kind]
        self.mean, self.std = tuple(mean or dm), tuple(std or ds)

    @classmethod
    def from_pretrained(cls, kind: Literal["dinov2", "clip"], path: str | Path | None, device: str = "cpu"):
        if path is None:
            raise Sim2RealError(f"encoder '{kind}' needs a local model folder: set encoder_path=DIR")
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise Sim2RealError(
                f"encoder '{kind}': no config.json in {path} (place a transformers checkpoint there)"
            )
        if kind == "dinov2":
            from transformers import Dinov2Model as Model
        else:
            from transformers import CLIPVisionModelWithProjection as Model
        model = Model.from_pretrained(str(path), local_files_only=True)
        mean = std = None
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            mean, std = p.get("image_mean"), p.get("image_std")
        size = int(model.config.image_size)
        return cls(kind, model, size=size, mean=mean, std=std, device=device)

    @torch.no_grad()
    def embed(self, images: Any, masks: Any) -> np.ndarray:
        t = _masked_tensor(images, masks, self.size, self.mean, self.std).to(self.device)
        out = self.model(pixel_values=t)
        e = out.image_embeds if self.name == "clip" else out.last_hidden_state[:, 0]
        return e.float().cpu().numpy()


def get_encoder(
    name: EncoderName = "texture",
    path: str | Path | None = None,
    device: str = "cpu",
    texture: TextureEncoderConfig | None = None,
) -> Encoder:
    """Build an encoder by name. `path`: DreamSim cache_dir, or the DINOv2/CLIP model folder."""
    if name == "texture":
        return TextureEncoder(texture)
    if name == "dreamsim":
        return DreamSimEncoder.from_cache(path, device=device)
    if name in ("dinov2", "clip"):
        return TransformersImageEncoder.from_pretrained(name, path, device=device)
    raise Sim2RealError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cos between rows: a `(B, D)`, b `(R, D)` → `(B, R)`."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return 1.0 - a @ b.T


def reconstruction_term(inp: Any, gen: Any, masks: Any) -> np.ndarray:
    """mean((1 − m) ⊙ (I_in − I_gen)²) over all pixels and channels, images in [0, 1] → `(B,)`."""
    a, b = as_images(inp, "inp"), as_images(gen, "gen")
    m = as_masks(masks, "in_masks")
    same_batch(a, b, "inp vs gen")
    same_batch(a, m, "inp vs in_masks")
    diff = (a - b) ** 2 * (~m)[..., None]
    return diff.reshape(len(a), -1).mean(axis=1).astype(np.float64)


def semantic_score(
    inp: Any,
    gen: Any,
    in_masks: Any,
    encoder: Encoder,
    refs: Any = None,
    ref_masks: Any = None,
    ref_embeddings: np.ndarray | None = None,
    lam: float = 0.05,
    reduce: Literal["mean", "min"] = "mean",
    return_parts: bool = False,
) -> np.ndarray | dict[str, np.ndarray]:
    """Paper Eq. 9 per edited image → `(B,)`, lower is better.

    inp, gen: the input frames and their edits `(B, H, W, 3)`; in_masks: bool `(B, H, W)`, the
    region the edit should change. refs/ref_masks: style frames `(R, H', W', 3)` and their region
    masks, or `ref_embeddings (R, D)` computed once with `encoder.embed(refs, ref_masks)` (refs are
    fixed during training, so pass these to avoid re-embedding). reduce: how the R distances of one
    edit combine. With `return_parts`, returns dict(sem, dist, recon).
    """
    if reduce not in ("mean", "min"):
        raise Sim2RealError(f"reduce must be 'mean' or 'min'; got {reduce!r}")
    if lam < 0:
        raise Sim2RealError(f"lam must be >= 0; got {lam}")
    if ref_embeddings is None:
        if refs is None or ref_masks is None:
            raise Sim2RealError("semantic_score needs refs and ref_masks, or ref_embeddings")
        ref_embeddings = encoder.embed(refs, ref_masks)
    recon = reconstruction_term(inp, gen, in_masks)
    d = cosine_distance(encoder.embed(gen, in_masks), np.asarray(ref_embeddings))  # (B, R)
    dist = d.mean(axis=1) if reduce == "mean" else d.min(axis=1)
    sem = dist + lam * recon
    if return_parts:
        return {"sem": sem, "dist": dist, "recon": recon}
    return sem

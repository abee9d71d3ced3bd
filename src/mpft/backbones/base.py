"""The backbone interface: what everything above ``mpft.backbones`` may ask of a vision encoder.

A family adapter (``encoder.py`` for CLIP, ``siglip.py``, ``dinov2.py``, ``dinov3.py``) subclasses
:class:`VisionBackbone` and is the only code that knows its transformers module names. The model,
TAM, explanations, training and the benchmarks use this interface only:

- geometry: ``input_contract`` (size, patch, mean/std, interpolation), ``grid``, ``num_patches``;
- tokens: ``num_prefix_tokens`` (CLS and register tokens before the patch tokens; 0 for SigLIP),
  ``embed`` (exact token dropping after positions are added), ``pre_norm``, ``run_blocks``,
  ``pool`` (the embedding as the model pools it), ``summary_token`` (one token per block for
  intermediate features);
- parameters: ``block_parameters``, ``head_side_parameters``, ``lora_target_modules``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mpft.errors import ConfigError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
# PIL.Image.Resampling values, as transformers' image processors store them ("resample": 3)
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class InputContract:
    """What a backbone expects as input: a ``image_size`` square, ``patch_size`` patches, and
    pixels normalised with ``mean``/``std`` (per RGB channel, on [0, 1] values), resized with
    ``interpolation`` by its own image processor.

    The backbone owns it; preprocessing settings only say how an image is resized or cropped to it.
    A checkpoint stores it (``config.json``, ``input_contract``) and loading checks it.
    """

    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def differences(self, stored: dict) -> list[str]:
        """What differs between a stored contract (a checkpoint's ``input_contract``) and this one."""
        out = []
        for key, want in self.to_dict().items():
            if key not in stored:
                continue
            got = stored[key]
            if isinstance(want, list):
                same = len(got) == len(want) and all(abs(float(a) - b) <= 1e-6 for a, b in zip(got, want, strict=False))
            else:
                same = got == want
            if not same:
                out.append(f"{key} {got!r} (checkpoint) vs {want!r} (backbone)")
        unknown = sorted(set(stored) - set(self.to_dict()))
        if unknown:
            out.append(f"unknown keys {unknown}")
        return out


def interpolation_name(resample: int | str | None, default: str = "bicubic") -> str:
    """An image processor's ``resample`` (PIL enum value or name) -> one of :data:`INTERPOLATIONS`."""
    if resample is None:
        return default
    if isinstance(resample, str):
        name = resample.lower()
        if name not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation {resample!r}; known: {INTERPOLATIONS}")
        return name
    if int(resample) not in _PIL_RESAMPLE:
        raise ConfigError(f"unknown resample value {resample!r} in the image processor config")
    return _PIL_RESAMPLE[int(resample)]


@dataclass
class EncoderOutput:
    """embedding: (B, E) pooled (or projected) embedding; tokens: (B, P+K, D) last hidden states or None."""

    embedding: torch.Tensor
    tokens: torch.Tensor | None = None


def gather_tokens(embeddings: torch.Tensor, keep: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """Keep the ``prefix`` leading tokens (CLS, registers) and the patch tokens listed in ``keep``.

    embeddings: (B, P+N, D) token embeddings with position embeddings already added, P = ``prefix``.
    keep: (B, K) long indices into the N patch tokens (0-based, patch order row-major).
    Returns (B, P+K, D).
    """
    if keep.dim() != 2 or keep.shape[0] != embeddings.shape[0]:
        raise ConfigError(
            f"keep must have shape (B, K) with B={embeddings.shape[0]}, got {tuple(keep.shape)}"
        )
    patches = embeddings[:, prefix:]
    index = (
        keep.to(device=embeddings.device, dtype=torch.long).unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    )
    return torch.cat([embeddings[:, :prefix], torch.gather(patches, 1, index)], dim=1)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class VisionBackbone(nn.Module):
    """A ViT image tower with an exact token-dropping forward pass.

    ``forward(pixels, keep=None)`` takes normalised pixels (B, 3, S, S). Position information is
    attached before tokens are dropped (added embeddings, or rotary positions gathered with the
    tokens), so running on a subset of patch tokens is exactly the transformer applied to those
    tokens (MAE-style masking). Prefix tokens (CLS, registers) are never dropped.

    Subclasses set the class attributes and implement the abstract methods below; ``model`` is the
    transformers module (its state dict is the backbone's identity).
    """

    #: the family's name (``mpft backbone list``, ``info()``)
    family: str = ""
    #: normalisation and resize filter when a checkpoint has no image-processor config
    default_mean: tuple[float, float, float]
    default_std: tuple[float, float, float]
    default_interpolation: str = "bicubic"
    #: whether its embeddings resize position information to another input size (DINOv2/v3 do;
    #: CLIP and SigLIP only take the size they were trained at)
    interpolates_positions: bool = False

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        """Hub id or folder -> the transformers vision module this adapter wraps (``hf:``)."""
        raise NotImplementedError

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        image_size: int | None = None,
        interpolation: str = "bicubic",
        weights_sha256: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.spec = spec
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation_name(interpolation)
        # None: the size the position embeddings were trained at (the config's)
        self._image_size = int(image_size) if image_size is not None else None
        # hashed now, before any tuning strategy adds adapters or training changes weights:
        # this is the identity of the *pretrained* backbone that checkpoints refer to
        self._weights_sha256 = weights_sha256 or state_dict_sha256(model.state_dict())

    # ---- what a family adapter provides ------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (CLS + registers); 0 when the family has none."""
        raise NotImplementedError

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        """Size of the embedding ``forward`` returns."""
        raise NotImplementedError

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, S, S) normalised -> (B, P+N, D) prefix and patch tokens, positions attached."""
        raise NotImplementedError

    def run_block(self, index: int, hidden: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Block ``index`` on (B, P+K, D) hidden states; ``keep`` (B, K) says which patches they are."""
        out = self.blocks[index](hidden, None)
        return out[0] if isinstance(out, tuple) else out

    def pre_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, T, D) input of block 0 (CLIP's pre-LayerNorm; else unchanged)."""
        return tokens

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, P+K, D) last hidden states -> (B, E) the embedding, pooled as the model does."""
        raise NotImplementedError

    def head_side_parameters(self) -> list[nn.Parameter]:
        """What sits between the last block and a detector head (final norm, pooling head, projection)."""
        raise NotImplementedError

    def lora_target_modules(self) -> list[str]:
        """peft ``target_modules``: name suffixes of the attention and MLP projections inside one block
        (LoRA is injected into :attr:`blocks`, so modules outside them never match)."""
        raise NotImplementedError

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def image_size(self) -> int:
        return self._image_size if self._image_size is not None else int(self.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    @property
    def input_contract(self) -> InputContract:
        """Input size, patch size, normalisation and interpolation this backbone was pretrained with."""
        return InputContract(self.image_size, self.patch_size, self.mean, self.std, self.interpolation)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return int(self.config.hidden_size)

    @property
    def weights_sha256(self) -> str:
        """Identity of the pretrained weights: recorded at conversion time, else hashed at construction."""
        return self._weights_sha256

    # ---- parameter groups (tuning strategies select through these) --------------------
    def block_parameters(self, index: int) -> list[nn.Parameter]:
        """Parameters of transformer block ``index`` (negative counts from the end)."""
        return list(self.blocks[index].parameters())

    # ---- forward --------------------------------------------------------------------------
    def embed(self, pixels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """pixels: (B, 3, S, S) normalised -> (B, P+K, D) prefix tokens and the kept patch tokens
        (all N when ``keep`` is None), positions attached."""
        if pixels.dim() != 4 or pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            raise ConfigError(
                f"{self.spec} expects pixels of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixels.shape)}"
            )
        tokens = self.embed_all(pixels)
        return tokens if keep is None else gather_tokens(tokens, keep, self.num_prefix_tokens)

    def run_blocks(
        self, hidden: torch.Tensor, start: int, stop: int, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply blocks ``start``..``stop-1`` to (B, P+K, D) hidden states (lets callers cache a frozen
        prefix); ``keep`` as given to :meth:`embed` (None: all patches)."""
        for i in range(start, stop):
            hidden = self.run_block(i, hidden, keep)
        return hidden

    def encode_tokens(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (B, T, D) embeddings -> (B, T, D) last hidden states (pre-norm, then the blocks)."""
        return self.run_blocks(self.pre_norm(tokens), 0, self.num_layers, keep)

    def summary_token(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, P+K, D) hidden states of one block -> (B, D): its CLS token, or the mean of the patch
        tokens for a family without one (what intermediate-block features read)."""
        return hidden[:, 0] if self.num_prefix_tokens else hidden.mean(dim=1)

    def forward(
        self, pixels: torch.Tensor, keep: torch.Tensor | None = None, *, return_tokens: bool = False
    ) -> EncoderOutput:
        """pixels: (B, 3, S, S) normalised; keep: optional (B, K) patch indices to keep.

        Returns the (B, E) embedding and, with ``return_tokens``, the (B, P+K, D) hidden states.
        """
        hidden = self.encode_tokens(self.embed(pixels, keep), keep)
        return EncoderOutput(self.pool(hidden), hidden if return_tokens else None)

    def block_tokens(
        self, pixels: torch.Tensor, blocks: tuple[int, ...], keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summary tokens (:meth:`summary_token`) after the given blocks (1-based: 1 = first block,
        ``num_layers`` = last).

        pixels: (B, 3, S, S) normalised; keep: optional (B, K) patch indices to keep.
        Returns (B, len(blocks), D) hidden states (no final norm, no projection). Blocks after
        the deepest one asked for are not run.
        """
        if not blocks or any(not 1 <= b <= self.num_layers for b in blocks):
            raise ConfigError(f"feature blocks must be in 1..{self.num_layers}, got {list(blocks)}")
        hidden = self.pre_norm(self.embed(pixels, keep))
        wanted, out = set(blocks), {}
        for i in range(max(blocks)):
            hidden = self.run_block(i, hidden, keep)
            if i + 1 in wanted:
                out[i + 1] = self.summary_token(hidden)
        return torch.stack([out[b] for b in blocks], dim=1)

    def normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """pixels01: (B, 3, S, S) in [0, 1] -> normalised with this backbone's mean/std."""
        mean = torch.tensor(self.mean, dtype=pixels01.dtype, device=pixels01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels01.dtype, device=pixels01.device).view(1, 3, 1, 1)
        return (pixels01 - mean) / std

    def info(self) -> dict:
        return {
            "spec": self.spec,
            "family": self.family,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "width": self.width,
            "layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "prefix_tokens": self.num_prefix_tokens,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "attn_implementation": getattr(self.config, "_attn_implementation", None),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

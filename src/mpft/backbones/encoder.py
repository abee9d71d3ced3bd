"""The one CLIP ViT image-encoder wrapper every backbone source produces.

It is the only module that knows transformers' module names: tuning strategies select
parameters through :meth:`ClipEncoder.block_parameters` and friends, never by matching
strings elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from mpft.errors import ConfigError

# OpenAI CLIP's pixel statistics: the one definition (every CLIP backbone here uses them unless its
# own preprocessor config says otherwise)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class InputContract:
    """What a backbone expects as input: a ``image_size`` square, ``patch_size`` patches, and
    pixels normalised with ``mean``/``std`` (per RGB channel, on [0, 1] values).

    The backbone owns it; preprocessing settings only say how an image is resized or cropped to it.
    """

    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class EncoderOutput:
    """embedding: (B, E) projected (or pooled) CLS embedding; tokens: (B, 1+K, D) last hidden states or None."""

    embedding: torch.Tensor
    tokens: torch.Tensor | None = None


def gather_tokens(embeddings: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep the CLS token and the patch tokens listed in ``keep``.

    embeddings: (B, 1+N, D) patch embeddings with position embeddings already added.
    keep: (B, K) long indices into the N patch tokens (0-based, patch order row-major).
    Returns (B, 1+K, D).
    """
    if keep.dim() != 2 or keep.shape[0] != embeddings.shape[0]:
        raise ConfigError(
            f"keep must have shape (B, K) with B={embeddings.shape[0]}, got {tuple(keep.shape)}"
        )
    patches = embeddings[:, 1:]
    index = (
        keep.to(device=embeddings.device, dtype=torch.long).unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    )
    return torch.cat([embeddings[:, :1], torch.gather(patches, 1, index)], dim=1)


class ClipEncoder(nn.Module):
    """A CLIP ViT image tower with an exact token-dropping forward pass.

    ``forward(pixels, keep=None)`` takes normalised pixels (B, 3, S, S). Position
    embeddings are added before tokens are dropped, so running on a subset of tokens is
    exactly the transformer applied to those tokens (MAE-style masking).
    """

    def __init__(
        self,
        model: CLIPVisionModelWithProjection | CLIPVisionModel,
        *,
        spec: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights_sha256: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.spec = spec
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # hashed now, before any tuning strategy adds adapters or training changes weights:
        # this is the identity of the *pretrained* backbone that checkpoints refer to
        self._weights_sha256 = weights_sha256 or state_dict_sha256(model.state_dict())
        vm = model.vision_model
        self._embeddings = vm.embeddings
        self._pre_ln = vm.pre_layrnorm
        self._post_ln = vm.post_layernorm
        self._layers = vm.encoder.layers
        self._projection = getattr(model, "visual_projection", None)

    # ---- geometry -------------------------------------------------------------------
    @property
    def config(self) -> CLIPVisionConfig:
        return self.model.config

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    @property
    def input_contract(self) -> InputContract:
        """Input size, patch size and normalisation this backbone was pretrained with."""
        return InputContract(self.image_size, self.patch_size, self.mean, self.std)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def width(self) -> int:
        return int(self.config.hidden_size)

    @property
    def embed_dim(self) -> int:
        """Size of the embedding ``forward`` returns (projection dim, or width without projection)."""
        return int(self._projection.out_features) if self._projection is not None else self.width

    @property
    def weights_sha256(self) -> str:
        """Identity of the pretrained weights: recorded at conversion time, else hashed at construction."""
        return self._weights_sha256

    # ---- parameter groups (tuning strategies select through these) --------------------
    def block_parameters(self, index: int) -> list[nn.Parameter]:
        """Parameters of transformer block ``index`` (negative counts from the end)."""
        return list(self._layers[index].parameters())

    def head_side_parameters(self) -> list[nn.Parameter]:
        """Post-LayerNorm and projection: what sits between the last block and a detector head."""
        params = list(self._post_ln.parameters())
        if self._projection is not None:
            params += list(self._projection.parameters())
        return params

    def lora_target_modules(self) -> list[str]:
        """Module name suffixes of the attention and MLP projections (for peft's LoRA)."""
        return ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

    # ---- forward --------------------------------------------------------------------------
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, S, S) normalised -> (B, 1+N, D) token embeddings with positions added."""
        if pixels.dim() != 4 or pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            raise ConfigError(
                f"{self.spec} expects pixels of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixels.shape)}"
            )
        return self._embeddings(pixels)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T, D) embeddings -> (B, T, D) last hidden states (pre-LN, then the blocks)."""
        return self.run_blocks(self.pre_norm(tokens), 0, self.num_layers)

    def pre_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, T, D) after CLIP's pre-LayerNorm (the input of block 0)."""
        return self._pre_ln(tokens)

    def run_blocks(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply blocks ``start``..``stop-1`` to (B, T, D) hidden states (lets callers cache a frozen prefix)."""
        for layer in self._layers[start:stop]:
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, D) -> (B, E): post-LayerNorm of CLS, then the projection if any."""
        pooled = self._post_ln(hidden[:, 0])
        return self._projection(pooled) if self._projection is not None else pooled

    def forward(
        self, pixels: torch.Tensor, keep: torch.Tensor | None = None, *, return_tokens: bool = False
    ) -> EncoderOutput:
        """pixels: (B, 3, S, S) normalised; keep: optional (B, K) patch indices to keep.

        Returns the (B, E) embedding and, with ``return_tokens``, the (B, 1+K, D) hidden states.
        """
        tokens = self.embed(pixels)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        hidden = self.encode_tokens(tokens)
        return EncoderOutput(self.pool(hidden), hidden if return_tokens else None)

    def block_cls(
        self, pixels: torch.Tensor, blocks: tuple[int, ...], keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CLS tokens after the given blocks (1-based: 1 = first block, ``num_layers`` = last).

        pixels: (B, 3, S, S) normalised; keep: optional (B, K) patch indices to keep.
        Returns (B, len(blocks), D) hidden CLS states (no LayerNorm, no projection). Blocks after
        the deepest one asked for are not run.
        """
        if not blocks or any(not 1 <= b <= self.num_layers for b in blocks):
            raise ConfigError(f"feature blocks must be in 1..{self.num_layers}, got {list(blocks)}")
        tokens = self.embed(pixels)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        hidden = self.pre_norm(tokens)
        wanted, out = set(blocks), {}
        for i in range(max(blocks)):
            hidden = self.run_blocks(hidden, i, i + 1)
            if i + 1 in wanted:
                out[i + 1] = hidden[:, 0]
        return torch.stack([out[b] for b in blocks], dim=1)

    def normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """pixels01: (B, 3, S, S) in [0, 1] -> normalised with this backbone's mean/std."""
        mean = torch.tensor(self.mean, dtype=pixels01.dtype, device=pixels01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels01.dtype, device=pixels01.device).view(1, 3, 1, 1)
        return (pixels01 - mean) / std

    def info(self) -> dict:
        return {
            "spec": self.spec,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "width": self.width,
            "layers": self.num_layers,
            "embed_dim": self.embed_dim,
            "has_projection": self._projection is not None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "attn_implementation": getattr(self.config, "_attn_implementation", None),
            "mean": list(self.mean),
            "std": list(self.std),
        }


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


def build_model(config: CLIPVisionConfig, *, with_projection: bool = True, empty: bool = False) -> nn.Module:
    """Instantiate a transformers CLIP vision tower with SDPA attention.

    ``empty``: skip the random initialisation (0.9 s for B/16 on 2 cores) because the caller
    replaces every parameter with loaded weights (``load_state_dict(..., assign=True)``); buffers
    such as the position ids are still built.
    """
    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    if not empty:
        return cls._from_config(config, attn_implementation="sdpa")
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return cls._from_config(config, attn_implementation="sdpa")

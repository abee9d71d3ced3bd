"""The detector network: vision backbone + tuning strategy + one-logit head.

Tuning strategies decide which tensors train (and therefore which a checkpoint stores):

- ``linear``: frozen backbone, linear head on the embedding (the UnivFD baseline);
- ``last-k``: the last K blocks, post-LayerNorm, projection and head;
- ``lora``: LoRA adapters (peft) on attention and MLP projections, plus the head;
- ``full``: everything.

The head reads the final pooled embedding, or (``TuneConfig.feature_blocks``) one summary token of
each of several blocks (CLS; the mean patch token for a family without CLS), each
layer-normalised without parameters and concatenated: low-level traces of
generators fade in the last blocks (RINE, Koutlis & Papadopoulos, ECCV 2024), so intermediate
blocks can carry what the final embedding has lost.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mpft.backbones import DEFAULT_BACKBONE, load_backbone
from mpft.backbones.base import VisionBackbone
from mpft.config import from_dict
from mpft.errors import ConfigError

TUNE_STRATEGIES = ("linear", "last-k", "lora", "full")


@dataclass
class TuneConfig:
    strategy: str = "last-k"
    layers: int = 4
    lora_rank: int = 8
    # None: 2 * lora_rank (resolved here, so a saved config always records the number used)
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    # 1-based blocks whose summary tokens (CLS, or mean patch token) feed the head; () = the final pooled embedding
    feature_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.feature_blocks = tuple(int(b) for b in self.feature_blocks)
        if any(b < 1 for b in self.feature_blocks) or len(set(self.feature_blocks)) != len(self.feature_blocks):
            raise ConfigError(f"feature blocks must be distinct block numbers >= 1, got {list(self.feature_blocks)}")
        if self.strategy not in TUNE_STRATEGIES:
            raise ConfigError(f"tuning strategy {self.strategy!r} is not one of {TUNE_STRATEGIES}")
        if self.layers < 1:
            raise ConfigError(f"--layers must be >= 1, got {self.layers}")
        if self.lora_rank < 1:
            raise ConfigError(f"--lora-rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha is None:
            self.lora_alpha = 2.0 * self.lora_rank

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_blocks"] = list(self.feature_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TuneConfig:
        return from_dict(cls, d, "tuning settings")


class DetectorModel(nn.Module):
    """encoder -> (B, E) embedding -> Linear(E, 1) -> logit of "generated"."""

    def __init__(self, encoder: VisionBackbone, tune: TuneConfig):
        super().__init__()
        if tune.strategy == "last-k" and tune.layers > encoder.num_layers:
            raise ConfigError(f"--layers {tune.layers} exceeds the backbone's {encoder.num_layers} blocks")
        if tune.feature_blocks and max(tune.feature_blocks) > encoder.num_layers:
            raise ConfigError(
                f"feature blocks {list(tune.feature_blocks)} exceed the backbone's {encoder.num_layers} blocks"
            )
        self.encoder = encoder
        self.tune = tune
        in_dim = len(tune.feature_blocks) * encoder.width if tune.feature_blocks else encoder.embed_dim
        self.head = nn.Linear(in_dim, 1)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self._configure_trainable()

    # ---- which tensors train ---------------------------------------------------------------
    def _configure_trainable(self) -> None:
        enc = self.encoder
        for p in enc.parameters():
            p.requires_grad_(False)
        s = self.tune.strategy
        if s == "full":
            for p in enc.parameters():
                p.requires_grad_(True)
        elif s == "last-k":
            for i in range(enc.num_layers - self.tune.layers, enc.num_layers):
                for p in enc.block_parameters(i):
                    p.requires_grad_(True)
            for p in enc.head_side_parameters():
                p.requires_grad_(True)
        elif s == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            cfg = LoraConfig(
                r=self.tune.lora_rank,
                lora_alpha=self.tune.lora_alpha,
                lora_dropout=self.tune.lora_dropout,
                target_modules=enc.lora_target_modules(),
            )
            # into the blocks only: what surrounds them (pooling heads) never gets adapters
            inject_adapter_in_model(cfg, enc.blocks)
            for name, p in enc.named_parameters():
                p.requires_grad_("lora_" in name)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained tensors (head, adapters, tuned blocks): what a checkpoint stores."""
        names = set(self.trainable_names())
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def parameter_groups(self, lr_head: float, lr_backbone: float, weight_decay: float) -> list[dict]:
        """Head and backbone get separate learning rates; biases and norms get no weight decay."""
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            part = "head" if name.startswith("head.") else "backbone"
            decay = p.dim() >= 2
            groups.setdefault((part, decay), []).append(p)
        return [
            {
                "params": ps,
                "lr": lr_head if part == "head" else lr_backbone,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
            for (part, decay), ps in groups.items()
        ]

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, pixels01: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """pixels01: (B, 3, S, S) float in [0, 1] (or uint8 0..255) -> (B,) logits.

        ``keep``: (B, K) indices of the patch tokens to keep (TAM's drop masks from
        :func:`mpft.tam.apply_mask` in training, occlusion groups in explanations); None keeps all.
        Masking itself is the training side's job: this forward only runs the tokens it is given.
        """
        if pixels01.dtype == torch.uint8:
            pixels01 = pixels01.float().div_(255.0)
        return self.head(self.features(self.encoder.normalize(pixels01), keep)).squeeze(-1)

    def features(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 3, S, S) normalised pixels -> (B, F) the head's input."""
        blocks = self.tune.feature_blocks
        if not blocks:
            return self.encoder(x, keep).embedding
        return block_features(self.encoder.block_tokens(x, blocks, keep))


def block_features(cls_tokens: torch.Tensor) -> torch.Tensor:
    """(B, nb, D) summary tokens of several blocks -> (B, nb * D), each layer-normalised without parameters.

    Blocks differ in scale by orders of magnitude; the parameter-free norm puts them on one footing
    so a single linear head (and weight decay) treats them alike.
    """
    normed = torch.nn.functional.layer_norm(cls_tokens.float(), cls_tokens.shape[-1:]).to(cls_tokens.dtype)
    return normed.flatten(1)


def create_model(
    backbone: str | VisionBackbone = DEFAULT_BACKBONE, tune: TuneConfig | dict | None = None
) -> DetectorModel:
    """The one factory of detector networks (training, checkpoint loading, tests, benchmarks).

    backbone: a spec for :func:`mpft.backbones.load_backbone` (``"clip-vit-b16"``, ``"random:tiny"``,
    ``"hf:..."``) or an encoder already loaded. A given encoder is deep-copied unless the strategy is
    ``linear``: tuned blocks and LoRA adapters change the encoder in place, and a caller's encoder
    (often shared between models in tests and benchmarks) must not change under it.
    tune: a :class:`TuneConfig`, its dict form (``config.json``), or None for the defaults.
    """
    if tune is None:
        tune = TuneConfig()
    elif isinstance(tune, dict):
        tune = TuneConfig.from_dict(tune)
    if isinstance(backbone, str):
        encoder = load_backbone(backbone)
    else:
        encoder = backbone if tune.strategy == "linear" else copy.deepcopy(backbone)
    return DetectorModel(encoder, tune)

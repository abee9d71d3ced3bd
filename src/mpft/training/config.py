"""The settings of one training run (:class:`TrainConfig`), what it returns (:class:`TrainResult`),
and which settings a resumed run must share with the run it continues (:meth:`TrainConfig.identity`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpft.backbones import DEFAULT_BACKBONE
from mpft.data.dataset import BALANCE_MODES
from mpft.data.transforms import Augment, PreprocessPolicy
from mpft.errors import ConfigError
from mpft.model import TuneConfig
from mpft.tam import MaskConfig
from mpft.views import ViewConfig, parse_views

BLOCK_LR = 2e-5
LORA_LR = 5e-4

# settings that may change between an interrupted run and its --resume (they do not change the result,
# or, for epochs, extend it on purpose)
_NOT_IDENTITY = ("out", "resume", "workers", "device", "epochs", "command")


@dataclass
class TrainConfig:
    """Settings of one training run. ``data``: one dataset or several (paths; each a folder layout
    or a CSV manifest); their samples are pooled, and ``balance`` decides how they are drawn."""

    data: str | list[str]
    out: str
    layout: str = "auto"
    val: str | None = None
    validate: bool = True
    backbone: str = DEFAULT_BACKBONE
    tune: TuneConfig = field(default_factory=TuneConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    preprocess: PreprocessPolicy = field(default_factory=PreprocessPolicy)
    augment: Augment = field(default_factory=Augment)
    # how batches draw from pooled data: "none" (each image once per epoch), "source" (each data
    # argument's real and generated images get equal shares), "generator" (each generator / real
    # source gets an equal share of its class); see mpft.data.dataset.balance_weights
    balance: str = "none"
    # the views the trained detector scores at inference (recorded in the checkpoint)
    views: ViewConfig = field(default_factory=ViewConfig)
    shots: int | None = None
    # per-epoch validation is for monitoring and choosing the best epoch; `mpft eval` is the full test
    val_limit: int | None = 200
    epochs: int = 2
    batch_size: int = 16
    lr_head: float = 1e-3
    # None: 2e-5 for tuned blocks (last-k, full); 5e-4 for LoRA adapters, which start at zero and
    # barely moved at 2e-5 (loss 0.64 after 3 epochs, runs/default.log in docs/benchmarks.md)
    lr_backbone: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip_grad: float = 1.0
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    resume: bool = False
    command: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, (list, tuple)):
            self.data = [str(d) for d in self.data] if len(self.data) != 1 else str(self.data[0])
            if not self.data:
                raise ConfigError("no training data given")
        if self.balance not in BALANCE_MODES:
            raise ConfigError(f"--balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        if isinstance(self.views, str):
            self.views = parse_views(self.views)
        if self.lr_backbone is None:
            self.lr_backbone = LORA_LR if self.tune.strategy == "lora" else BLOCK_LR
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.shots is not None and self.shots < 2:
            raise ConfigError(f"--shots must be >= 2 (one image per class at least), got {self.shots}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tune"], d["mask"] = self.tune.to_dict(), self.mask.to_dict()
        d["preprocess"], d["augment"] = self.preprocess.to_dict(), self.augment.to_dict()
        d["views"] = self.views.to_dict()
        return d

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues (a JSON-able dict)."""
        d = self.to_dict()
        for k in _NOT_IDENTITY:
            d.pop(k)
        return d


@dataclass
class TrainResult:
    """What :func:`~mpft.training.loop.train` wrote and measured."""

    out: Path
    best: Path
    last: Path
    history: list[dict]
    skipped: dict[str, str]
    seconds: float
    images_per_second: float

"""The settings of one training run (:class:`TrainConfig`), what it returns (:class:`TrainResult`),
and which settings a resumed run must share with the run it continues (:meth:`TrainConfig.identity`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpft.backbones import DEFAULT_BACKBONE
from mpft.config import from_dict
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
_NOT_IDENTITY = ("out", "resume", "workers", "device", "epochs", "command", "feature_cache")

# --feature-cache values that are not folders
CACHE_AUTO, CACHE_NONE = "auto", "none"
FEATURE_PRECISIONS = ("fp32", "bf16")


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
    # images left out of training and validation: image paths, or CSV files whose `path` column
    # lists them (relative to the CSV's folder), e.g. a benchmark fold's held-out images
    exclude: tuple[str, ...] = ()
    # 0: a fresh augmentation at every draw; N: N augmented views per image, fixed per seed, each draw
    # taking one of them (what a feature cache can store)
    train_views: int = 0
    # frozen-backbone runs (tune linear, no mask) with train_views >= 1 train the head on cached
    # features: "auto" caches in OUT/features, a folder caches there (shared between runs), "none"
    # runs the backbone at every step (mpft.training.features)
    feature_cache: str = CACHE_AUTO
    # the backbone's precision while it computes cached features (bf16: faster on AVX512-BF16/AMX CPUs)
    feature_precision: str = "fp32"
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
        self.exclude = tuple(str(e) for e in self.exclude)
        if self.train_views < 0:
            raise ConfigError(f"--train-views must be >= 0 (0: fresh augmentations), got {self.train_views}")
        if self.feature_precision not in FEATURE_PRECISIONS:
            raise ConfigError(
                f"--feature-precision must be one of {FEATURE_PRECISIONS}, got {self.feature_precision!r}"
            )
        if self.feature_cache not in (CACHE_AUTO, CACHE_NONE) and not self.cacheable:
            raise ConfigError(
                f"--feature-cache {self.feature_cache}: only a frozen backbone (--tune linear --mask none) with "
                f"--train-views >= 1 can train on cached features (got --tune {self.tune.strategy}, "
                f"--mask {self.mask.strategy}, --train-views {self.train_views})"
            )

    @property
    def cacheable(self) -> bool:
        """The backbone is frozen and sees a finite set of views: its features can be computed once."""
        return self.tune.strategy == "linear" and not self.mask.active and self.train_views >= 1

    def feature_cache_dir(self) -> Path | None:
        """Where this run's cached features live, or None when it runs the backbone at every step."""
        if self.feature_cache == CACHE_NONE or not self.cacheable:
            return None
        return Path(self.out) / "features" if self.feature_cache == CACHE_AUTO else Path(self.feature_cache)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The settings of ``to_dict()`` (a checkpoint's ``training.settings``) back as a TrainConfig;
        unknown keys are a ConfigError naming the valid ones, missing keys take their defaults."""
        d = dict(d)
        nested = {"tune": TuneConfig, "mask": MaskConfig, "preprocess": PreprocessPolicy, "augment": Augment,
                  "views": ViewConfig}
        for key, kind in nested.items():
            if isinstance(d.get(key), dict):
                d[key] = kind.from_dict(d[key])
        return from_dict(cls, d, "training settings")

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

"""Compatibility facade: ``from mpft.train import TrainConfig, train`` keeps working.

The training code lives in :mod:`mpft.training` (one job per module); this module only
re-exports its public names. ``mpft.train`` is also the public function (``mpft.train(cfg)``,
a lazy attribute of the package); importing this module would replace that attribute with the
module, so the module is made callable and calls :func:`mpft.training.train`.
"""

from __future__ import annotations

import sys
import types

from mpft.data.layouts import has_splits  # the one split rule, shared with discover and eval
from mpft.training import BLOCK_LR, LORA_LR, TrainConfig, TrainResult, train

__all__ = ["BLOCK_LR", "LORA_LR", "TrainConfig", "TrainResult", "has_splits", "train"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

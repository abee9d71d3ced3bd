"""Where ``mpft predict`` scores its inputs.

- ``local``: this process (``Detector.predict_iter``; ``--workers`` decode in worker processes).
- ``ray``: a Ray Data pipeline (:mod:`mpft.engines.ray_data`, the ``ray`` extra): decoding in tasks,
  scoring in actors that each load the detector once; on this machine or a cluster (``--address``).

Both produce the same rows, in input order, with the same probabilities.
"""

from __future__ import annotations

from mpft.engines.spec import DetectorSpec
from mpft.errors import ConfigError

__all__ = ["DEFAULT_ENGINE", "ENGINES", "DetectorSpec", "check_engine"]

ENGINES = ("local", "ray")
DEFAULT_ENGINE = "local"


def check_engine(name: str) -> str:
    """The normalised engine name.

    Raises:
        ConfigError: not one of :data:`ENGINES`, or ``ray`` without the ray extra installed.
    """
    engine = name.lower()
    if engine not in ENGINES:
        raise ConfigError(f"unknown --engine {name!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise ConfigError("--engine ray needs Ray Data: pip install 'mpft[ray]'") from None
    return engine

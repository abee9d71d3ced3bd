"""Labelled samples and what is done with a list of them: class checks, seeded subsets, counts.

A :class:`Sample` is what dataset discovery (:mod:`mpft.data.layouts`) produces and what
:class:`mpft.data.dataset.ImageDataset` reads. The subsets (``balanced_subset``,
``limit_per_class``) are seeded per (class, generator) group, so one group's draw does not
depend on the others.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpft.errors import ConfigError, DataError

__all__ = [
    "FAKE",
    "REAL",
    "Sample",
    "balanced_subset",
    "limit_per_class",
    "require_both_classes",
    "summarize",
]

REAL, FAKE = 0, 1


@dataclass(frozen=True, order=True)
class Sample:
    """One labelled image. ``label`` is 0 for real, 1 for generated.

    ``source``: the collection it came from, when the data names one (a CSV's ``source`` column);
    ``--balance generator`` groups real photos by it (else by ``generator``, the folder's name).
    """

    path: Path
    label: int
    generator: str
    source: str = ""

    @property
    def group(self) -> str:
        """The balance group within its class: the generator of a generated image, the source of a real one."""
        return (self.source or self.generator) if self.label == REAL else self.generator


def _class_name(label: int) -> str:
    return "real" if label == REAL else "generated"


def require_both_classes(samples: Iterable[Sample], what: str) -> None:
    """Raise DataError unless ``samples`` hold both real and generated images.

    Args:
        what: name of the set for the message, e.g. ``"training set"``.
    """
    counts = {REAL: 0, FAKE: 0}
    for s in samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    for label in (REAL, FAKE):
        if counts[label] == 0:
            other = FAKE if label == REAL else REAL
            raise DataError(
                f"{what} has only {_class_name(other)} images ({counts[other]}) and no "
                f"{_class_name(label)} ones; both classes are needed"
            )


def _group_rng(seed: int, *key: object) -> np.random.Generator:
    # Seeding each group from its own name keeps one group's draw independent of the others.
    digest = zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))
    return np.random.default_rng([seed, digest])


def _by_generator(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.generator].append(s)
    return {g: sorted(v) for g, v in sorted(groups.items())}


def _spread_pick(samples: Sequence[Sample], k: int, seed: int, label: int) -> list[Sample]:
    """Pick k samples round-robin over generators, each generator's order shuffled by seed."""
    queues = []
    for gen, group in _by_generator(samples).items():
        order = _group_rng(seed, label, gen).permutation(len(group))
        queues.append([group[i] for i in order])
    picked: list[Sample] = []
    depth = 0
    while len(picked) < k:
        for queue in queues:
            if depth < len(queue) and len(picked) < k:
                picked.append(queue[depth])
        depth += 1
    return picked


def balanced_subset(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded class-balanced subset: ``n // 2`` real and ``n - n // 2`` generated images.

    Within a class the pick is spread evenly across generators (round-robin), so each
    generator gets ``k // G`` or one more unless it has too few.

    Returns:
        Sorted list of ``n`` samples; same inputs and seed give the same list.

    Raises:
        ConfigError: ``n`` is negative.
        DataError: a class has fewer images than needed.
    """
    if n < 0:
        raise ConfigError(f"subset size must be >= 0, got {n}")
    wanted = {REAL: n // 2, FAKE: n - n // 2}
    out: list[Sample] = []
    for label, k in wanted.items():
        pool = [s for s in samples if s.label == label]
        if len(pool) < k:
            raise DataError(
                f"balanced subset of {n} needs {k} {_class_name(label)} images, only {len(pool)} available"
            )
        out.extend(_spread_pick(pool, k, seed, label))
    return sorted(out)


def limit_per_class(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """Keep at most ``n`` samples per (generator, class), chosen with a seeded shuffle.

    Returns:
        Sorted list.

    Raises:
        ConfigError: ``n`` is negative.
    """
    if n < 0:
        raise ConfigError(f"per-class limit must be >= 0, got {n}")
    groups: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.generator, s.label)].append(s)
    out: list[Sample] = []
    for (gen, label), group in sorted(groups.items()):
        group.sort()
        if len(group) > n:
            keep = _group_rng(seed, label, gen).permutation(len(group))[:n]
            group = [group[i] for i in sorted(keep)]
        out.extend(group)
    return sorted(out)


def summarize(samples: Iterable[Sample]) -> dict:
    """Counts per generator and class.

    Returns:
        ``{"total": N, "real": R, "fake": F, "generators": {name: {"real": r, "fake": f}}}``
        with generators sorted by name.
    """
    per_gen: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "fake": 0})
    for s in samples:
        per_gen[s.generator]["real" if s.label == REAL else "fake"] += 1
    generators = {g: dict(c) for g, c in sorted(per_gen.items())}
    real = sum(c["real"] for c in generators.values())
    fake = sum(c["fake"] for c in generators.values())
    return {"total": real + fake, "real": real, "fake": fake, "generators": generators}

"""How a score is asked for and said: K of rank-K, the test-time augmentations, and the words
that name them wherever a score is shown. Pure Python; the plan checks a request with these
before a model is loaded, and evaluation, prediction, summary and ui use the same ones."""

from __future__ import annotations

from resnetctl.errors import RunError

TTA_MODES = ("flip",)


def check_topk(topk: int | None, classes: int) -> int:
    """K of rank-K (``None``: min(5, classes)); refused outside 1..classes."""
    k = min(5, classes) if topk is None else topk
    if not 1 <= k <= classes:
        raise RunError(f"--topk must be between 1 and the {classes} classes. Received: {k}")
    return k


def check_tta(tta: str | None) -> str | None:
    if tta is not None and tta not in TTA_MODES:
        raise RunError(f"Unknown test-time augmentation {tta!r}", hint=f"use {', '.join(TTA_MODES)}")
    return tta


def describe_tta(tta: str | None) -> str:
    """How a score was taken, said wherever one is shown: ``no TTA`` or ``TTA flip``."""
    return f"TTA {tta}" if tta else "no TTA"

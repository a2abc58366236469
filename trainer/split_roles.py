"""Split roles, enforced where models train: fitting and early stopping read only the fold splits.

The holdout split is the gate's (StudentEvaluator) and the test split the final, reported figure's
(BatchInference against the test truth, benchmarks/quality_bench.py); no Trainer may read either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FOLD_SPLIT = re.compile(r"fold_\d+")
_FOLD_FILES = re.compile(r"(^|/)Split-fold_\d+(/|$)")


def check_training_splits(train_splits: Sequence[str], train_files: Sequence[str]) -> None:
    """Fail unless every training split is a fold split and every training file pattern lies in one."""
    others = [split for split in train_splits if not _FOLD_SPLIT.fullmatch(split)]
    if others:
        raise ValueError(
            f"train_splits {others}: models train and early-stop on the fold splits (fold_<k>) only; "
            "the holdout is for the gate and the test split for the final figures"
        )
    stray = [pattern for pattern in train_files if not _FOLD_FILES.search(pattern)]
    if stray:
        raise ValueError(f"train_files {stray}: not in a fold split (Split-fold_<k>)")

"""Is the cycle's detector finding anything? If not, every strategy's choice is meaningless: say so.

A detector "finds nothing" when its validation mAP50-95 is below NEAR_ZERO_MAP, or when it predicts
no box at all on the pool (at its own confidence floor, detector.predict_conf). Uncertainty
strategies then rank noise, the lookup table's records are all about zero (the tree-crown try:
0.0000 for all 8) and MGRAL's reward has nothing to follow.
"""

from __future__ import annotations

from pathlib import Path

from mgral_workspace.inference_cache import count_boxes

NEAR_ZERO_MAP = 0.005  # val mAP50-95 below this is "about zero": a few lucky boxes at most

ADVICE = ("what helps: a pretrained start (detector.pretrained: builtin, or your own .pt trained on similar images "
          "as detector.model or detector.pretrained), more epochs (detector.epochs, detector.finetune_epochs), more "
          "labels (label the batch, or a larger selection.budget)")


def detector_warnings(val_map50_95: float, inference_path: str | Path | None = None) -> list[str]:
    """The warnings a cycle's detector earns (empty when it finds something); each says what helps.

    `inference_path` (the cycle's pool inference) adds the check for no box at all on the pool.
    """
    warnings = []
    if not val_map50_95 >= NEAR_ZERO_MAP:  # NaN counts as zero
        warnings.append(f"the detector finds nothing: validation mAP50-95 {val_map50_95:.4f} is below "
                        f"{NEAR_ZERO_MAP}, so every strategy's selection is as good as random (or worse); {ADVICE}")
    if inference_path is not None:
        images, boxes = count_boxes(inference_path)
        if boxes == 0 and images:
            warnings.append(f"the detector predicts nothing on the pool: no box on any of its {images} "
                            f"images, so every strategy's selection is meaningless; {ADVICE}")
    return warnings

"""EBAL-style selection (Wu et al., CVPR 2022): entropy-based NMS within each image, then a batch that
skips near-duplicates of an already-selected image with the same dominant class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgral_core.detections import Detections
from mgral_core.evaluation import box_iou
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget
from mgral_core.strategies.uncertainty_sampling import candidate_detections
from mgral_core.uncertainty import detection_entropy

ENMS_IOU = 0.5  # same-class boxes overlapping a kept one above this IoU are redundant
PROTOTYPE_COSINE = 0.7  # an image this similar to a selected one of the same dominant class is skipped
NO_CLASS = -1  # dominant class of an image without detections


def enms_scores(detections: Sequence[Detections], num_classes: int,
                iou_threshold: float = ENMS_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the ENMS entropy score (U,) and the dominant class (U,), NO_CLASS without detections.

    ENMS: repeatedly take the remaining detection of highest entropy (see
    `mgral_core.uncertainty.detection_entropy`), add its entropy to the image's score, and drop
    the remaining detections of the same predicted class whose box overlaps it with IoU above
    `iou_threshold`, until none remain. The dominant class is the class whose kept detections
    contribute the most entropy (ties to the lower class index). Images without detections
    score 0.

    Raises:
        ValueError: an image with detections but without class_probs.
    """
    scores = np.zeros(len(detections))
    dominant = np.full(len(detections), NO_CLASS, np.int64)
    for i, det in enumerate(detections):
        if len(det) == 0:
            continue
        if det.class_probs is None:
            raise ValueError(f"image {i} has {len(det)} detections but no class_probs; ENMS needs them")
        entropy = detection_entropy(det.class_probs)  # (N,)
        same_class = det.classes[:, None] == det.classes[None, :]  # (N, N)
        redundant = same_class & (box_iou(det.boxes_xyxy.astype(np.float64), det.boxes_xyxy.astype(np.float64))
                                  > iou_threshold)  # (N, N)
        alive = np.ones(len(det), bool)
        per_class = np.zeros(max(num_classes, int(det.classes.max()) + 1))
        for j in np.argsort(-entropy, kind="stable"):
            if not alive[j]:
                continue
            per_class[det.classes[j]] += entropy[j]
            alive &= ~redundant[j]
            alive[j] = False
        scores[i] = per_class.sum()
        dominant[i] = int(np.argmax(per_class))
    return scores, dominant


def ebal(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k unlabeled ids: highest ENMS score first, skipping near-duplicates of the same dominant class.

    Candidates are visited in descending ENMS score (ties broken by `rng`). A candidate is skipped
    if the cosine similarity between its prototype and that of an already-selected image with
    the same dominant class exceeds PROTOTYPE_COSINE. If fewer than k survive, the skipped ones
    fill the batch in the same order, so k ids always come back. The labeled set is not used.

    Departures from the paper (whose ENMS and prototypes use per-instance RoI features, and
    which compares prototypes of every class an image contains and adds an inter-class step that
    favours minority classes): we have no instance features, so ENMS suppresses by box IoU
    within a class. It removes overlapping instances, not merely similar-looking ones, and
    YOLO's own NMS (IoU 0.7 in `detector.predict_images`) already removed the strongest overlaps.
    The prototype is the image embedding centred on the pool mean (pooled backbone activations
    are mostly positive, so raw cosines all sit near 1); one dominant class per image stands in
    for per-class prototypes; there is no minority-class step. ENMS_IOU and PROTOTYPE_COSINE
    reuse the magnitudes of the paper's feature-similarity thresholds; on these different
    quantities they are starting points, not tuned values.
    """
    check_budget(pool, k)
    if k == 0:
        return []
    scores, dominant = enms_scores(candidate_detections(pool), pool.num_classes)  # (U,), (U,)
    emb = np.asarray(pool.unlabeled_embeddings, np.float64)  # (U, D)
    emb = emb - emb.mean(axis=0)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    prototypes = emb / np.where(norms > 0, norms, 1.0)  # (U, D) unit rows, or zero

    order = np.lexsort((rng.permutation(len(scores)), -scores))  # (U,) best first
    selected: list[int] = []
    skipped: list[int] = []
    for row in order:
        if len(selected) == k:
            break
        same = [s for s in selected if dominant[s] == dominant[row]]
        if same and (prototypes[same] @ prototypes[row]).max() > PROTOTYPE_COSINE:
            skipped.append(int(row))
        else:
            selected.append(int(row))
    selected += skipped[:k - len(selected)]
    return [str(pool.unlabeled_ids[i]) for i in selected]

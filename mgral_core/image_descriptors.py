"""Task-aware per-image descriptors for the reward estimator: what the detector saw, not only its embedding.

The distance between two batches of 256-d global embeddings barely sees the few rare-class objects
or hard-domain images that move a detector's mAP. A descriptor puts those in plain view, one row per
image: the detector's class-probability mass per class (how much of each class the image seems to
hold), the maximum and mean class entropy of its detections (how confused the detector is on it),
and the first principal components of its embedding (what it looks like); every column standardised
over the images given, so that no block dominates by its units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgral_core.detections import Detections
from mgral_core.uncertainty import detection_entropy


def class_mass(detections: Detections, num_classes: int) -> np.ndarray:
    """(C,) sum over the image's detections of their class probabilities (score on the predicted class
    when the producer kept no probabilities); zeros for an image without detections."""
    if not len(detections):
        return np.zeros(num_classes)
    if detections.class_probs is not None:
        probs = np.asarray(detections.class_probs, np.float64)  # (N, C)
        if probs.shape[1] != num_classes:
            raise ValueError(f"class_probs have {probs.shape[1]} classes, the project {num_classes}")
        return probs.sum(axis=0)
    return np.bincount(detections.classes, weights=detections.scores, minlength=num_classes)[:num_classes]


def entropy_stats(detections: Detections) -> tuple[float, float]:
    """(max, mean) class entropy of the image's detections; (0, 0) without detections or probabilities."""
    if not len(detections) or detections.class_probs is None:
        return 0.0, 0.0
    entropy = detection_entropy(detections.class_probs)  # (N,)
    return float(entropy.max()), float(entropy.mean())


def principal_components(embeddings: np.ndarray, dims: int) -> np.ndarray:
    """(N, dims) projections of the centred embeddings (N, D) on their top `dims` principal axes.

    From the eigenvectors of the (D, D) covariance, so the cost is O(N D^2) whatever N; each axis's
    sign is fixed (its largest-magnitude coordinate positive), so the result is deterministic.
    """
    x = np.asarray(embeddings, np.float64)
    dims = min(dims, x.shape[1])
    if dims <= 0:
        return np.zeros((len(x), 0))
    centred = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    axes = vectors[:, ::-1][:, :dims]  # (D, dims)
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dims)])
    return centred @ axes


def standardise(columns: np.ndarray) -> np.ndarray:
    """Each column minus its mean, over its standard deviation; a constant column becomes zeros."""
    std = columns.std(axis=0)
    return (columns - columns.mean(axis=0)) / np.where(std > 0, std, 1.0)


def task_aware_descriptors(embeddings: np.ndarray, detections: Sequence[Detections], num_classes: int,
                           pca_dims: int = 8) -> np.ndarray:
    """(N, C + 2 + pca_dims) float32 descriptors of N images, rows aligned with embeddings (N, D) and detections.

    Columns: class-probability mass of each of the C classes, max and mean detection entropy, the
    `pca_dims` leading principal components of the embeddings; each standardised over the N images
    (fit the statistics on the whole pool so every batch is described on one scale).
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) != len(detections):
        raise ValueError(f"need embeddings (N, D) and N detections, got {embeddings.shape} and {len(detections)}")
    if num_classes < 1 or pca_dims < 0:
        raise ValueError(f"need num_classes >= 1 and pca_dims >= 0, got {num_classes}, {pca_dims}")
    mass = np.array([class_mass(d, num_classes) for d in detections]).reshape(len(detections), num_classes)
    entropy = np.array([entropy_stats(d) for d in detections]).reshape(len(detections), 2)
    columns = np.concatenate([mass, entropy, principal_components(embeddings, pca_dims)], axis=1)
    return standardise(columns).astype(np.float32)

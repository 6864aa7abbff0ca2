"""Gaussian-process value model of lookup-table records on a precomputed batch-distance matrix.

Every record takes part in every estimate (the paper's "prediction network" future work, here a
GP rather than a network): values y (R,) of record batches with pairwise distances D (R, R) are
modelled as y = beta + f + noise, f ~ GP(0, s2 * exp(-d^2 / l^2)), noise ~ N(0, s2 * lam), and a
flat prior on the constant beta (estimated by generalised least squares; Rasmussen & Williams
2006, section 2.7). The length scale l and the noise ratio lam are chosen by the exact closed-form
leave-one-out predictive log probability (R&W section 5.4.2); the signal variance s2 then has a
closed form. Fitting is O(R^3) per grid point; a prediction from a new batch's (R,) distances is
O(R) for the mean and O(R^2) for its standard deviation.

Positive definiteness: exp(-d^2 / l^2) is a Gaussian kernel on a Euclidean space whenever d is a
Euclidean distance. The sliced distance of `mgral_core.wasserstein` (fixed directions, fixed
quantile levels) is one: a scaled Euclidean distance between the flattened (P, m) quantile
arrays, so its kernel matrix is positive semi-definite up to rounding. Exact W2 between sets in
more than one dimension is not Hilbertian, and its kernel matrix can have negative eigenvalues.
Either way the eigenvalues of the kernel matrix are clipped at zero before the noise ratio (at
least `MIN_NOISE_RATIO`) is added, so the matrix inverted is always positive definite; the
leave-one-out formulas are exact for the matrix actually used. numpy only (and threadpoolctl).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

MIN_NOISE_RATIO = 1e-6  # jitter: the smallest noise variance, as a share of the signal variance
LENGTHSCALE_FACTORS = 2.0 ** np.arange(-6, 6.5, 0.5)  # coarse grid: l = factor x median record distance
NOISE_RATIOS = 10.0 ** np.arange(-6, 2.01, 0.25)  # coarse grid of lam = noise variance / signal variance
MIN_FIT_RECORDS = 3  # below this, leave-one-out cannot choose hyperparameters: the defaults are used
DEFAULT_NOISE_RATIO = 0.1


@cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries, found once (a scan costs about 30 ms)."""
    return ThreadpoolController()


def one_blas_thread():
    """Context manager holding numpy's BLAS to one thread."""
    return _blas().limit(limits=1, user_api="blas")


@dataclass(frozen=True)
class GPHyperparameters:
    """Kernel and noise settings of a `GPValueModel`.

    Attributes:
        lengthscale: l of exp(-d^2 / l^2), in distance units.
        noise_ratio: noise variance / signal variance (lam), > 0.
        signal_variance: s2, in squared value units (0 when every record has the same value).
        fitted: True when chosen by leave-one-out, False when the defaults for a small or constant table.
    """

    lengthscale: float
    noise_ratio: float
    signal_variance: float
    fitted: bool


@dataclass(frozen=True)
class Prediction:
    """A batch's predicted value.

    Attributes:
        mean: the predicted value.
        std: predictive standard deviation of the batch's (noise-free) value, in value units.
        std_ratio: `std` in units of the prior standard deviation sqrt(s2): about 0 where the records
            pin the value down, above 1 far from every record (the constant's own uncertainty adds to
            the prior). Defined even when s2 is 0, so the fallback can use it for any table.
    """

    mean: float
    std: float
    std_ratio: float


def kernel(distances: np.ndarray, lengthscale: float) -> np.ndarray:
    """exp(-d^2 / l^2) elementwise, for any shape of distances."""
    return np.exp(-np.square(np.asarray(distances, np.float64) / lengthscale))


def median_distance(pairwise: np.ndarray) -> float:
    """Median of the positive off-diagonal record distances; 1.0 when there is none (the length-scale unit)."""
    upper = pairwise[np.triu_indices(len(pairwise), k=1)]
    upper = upper[upper > 0]
    return float(np.median(upper)) if len(upper) else 1.0


def _psd_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at zero) and eigenvectors of a symmetric matrix (symmetrised first)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return np.maximum(eigenvalues, 0.0), eigenvectors


@dataclass(frozen=True)
class _Solved:
    """The linear algebra of one (l, lam) on R records: A = C + lam I with C the clipped kernel matrix."""

    inverse: np.ndarray  # (R, R) A^-1
    inverse_ones: np.ndarray  # (R,) A^-1 1
    ones_inverse_ones: float  # 1' A^-1 1
    beta: float  # GLS constant
    alpha: np.ndarray  # (R,) A^-1 (y - beta)
    loo_residual_scaled: np.ndarray  # (R,) [P y]_i, P = A^-1 - A^-1 1 1' A^-1 / (1' A^-1 1)
    p_diagonal: np.ndarray  # (R,) P_ii


def _solve(eigenvalues: np.ndarray, eigenvectors: np.ndarray, noise_ratio: float, values: np.ndarray) -> _Solved:
    g = 1.0 / (eigenvalues + noise_ratio)  # (R,)
    inverse = (eigenvectors * g) @ eigenvectors.T  # (R, R)
    inverse_ones = inverse.sum(axis=1)  # (R,)
    ones_inverse_ones = float(inverse_ones.sum())
    beta = float(inverse_ones @ values / ones_inverse_ones)
    alpha = inverse @ (values - beta)  # (R,) = P y
    p_diagonal = np.diag(inverse) - inverse_ones ** 2 / ones_inverse_ones
    return _Solved(inverse, inverse_ones, ones_inverse_ones, beta, alpha, alpha, np.maximum(p_diagonal, 1e-300))


def _loo_score(eigenvalues: np.ndarray, eigenvectors: np.ndarray, values: np.ndarray,
               noise_ratios: np.ndarray) -> np.ndarray:
    """(L,) LOO log predictive probability (s2 profiled out) of one kernel matrix at L noise ratios, O(R^2 L)."""
    n = len(values)
    z_y, z_1 = eigenvectors.T @ values, eigenvectors.T @ np.ones(n)  # (R,)
    g = 1.0 / (eigenvalues[:, None] + noise_ratios[None, :])  # (R, L)
    inv_y, inv_1 = eigenvectors @ (g * z_y[:, None]), eigenvectors @ (g * z_1[:, None])  # (R, L)
    one_inv_one, one_inv_y = (z_1 ** 2) @ g, (z_1 * z_y) @ g  # (L,)
    py = inv_y - inv_1 * (one_inv_y / one_inv_one)  # (R, L) P y
    p_diag = np.maximum((eigenvectors ** 2) @ g - inv_1 ** 2 / one_inv_one, 1e-300)  # (R, L) P_ii
    signal = np.mean(py ** 2 / p_diag, axis=0)  # (L,) the s2 maximising the LOO likelihood
    with np.errstate(divide="ignore"):
        return np.where(signal > 0, -0.5 * n * np.log(signal) + 0.5 * np.log(p_diag).sum(axis=0) - 0.5 * n, -np.inf)


def fit_hyperparameters(pairwise: np.ndarray, values: np.ndarray) -> GPHyperparameters:
    """Length scale and noise ratio by maximising the closed-form LOO log predictive probability.

    A coarse grid (length scale 1/64 to 64 times the median record distance, noise ratio 1e-6 to 100,
    both log-spaced), then a finer grid around its best point within the coarse range. The signal
    variance is the closed-form maximiser for the chosen pair. With fewer than `MIN_FIT_RECORDS`
    records or constant values nothing can be fitted: the length scale is the median record distance,
    the noise ratio `DEFAULT_NOISE_RATIO` and the signal variance the values' variance (0 for one record).
    Deterministic: no random numbers. Runs numpy's BLAS on one thread: the matrices are small, and
    on a 2-core machine shared with other work a second BLAS thread made a 200-record fit 20x slower.
    """
    with one_blas_thread():
        return _fit(*_check(pairwise, values))


def _fit(pairwise: np.ndarray, values: np.ndarray) -> GPHyperparameters:
    unit = median_distance(pairwise)
    if len(values) < MIN_FIT_RECORDS or np.ptp(values) == 0:
        return GPHyperparameters(unit, DEFAULT_NOISE_RATIO, float(np.var(values)), fitted=False)

    def best_on(factors: np.ndarray, ratios: np.ndarray) -> tuple[float, float, float]:
        best = (-np.inf, float(factors[0]), float(ratios[0]))
        for factor in factors:
            eigenvalues, eigenvectors = _psd_eigh(kernel(pairwise, factor * unit))
            scores = _loo_score(eigenvalues, eigenvectors, values, ratios)
            j = int(np.argmax(scores))
            if scores[j] > best[0]:
                best = (float(scores[j]), float(factor), float(ratios[j]))
        return best

    _, factor, ratio = best_on(LENGTHSCALE_FACTORS, NOISE_RATIOS)
    fine_factors = np.clip(factor * 2.0 ** np.linspace(-0.5, 0.5, 5), LENGTHSCALE_FACTORS[0], LENGTHSCALE_FACTORS[-1])
    fine_ratios = np.clip(ratio * 10.0 ** np.linspace(-0.25, 0.25, 5), NOISE_RATIOS[0], NOISE_RATIOS[-1])
    _, factor, ratio = best_on(np.unique(fine_factors), np.unique(fine_ratios))
    eigenvalues, eigenvectors = _psd_eigh(kernel(pairwise, factor * unit))
    solved = _solve(eigenvalues, eigenvectors, ratio, values)
    signal = float(np.mean(solved.loo_residual_scaled ** 2 / solved.p_diagonal))
    return GPHyperparameters(factor * unit, ratio, signal, fitted=True)


def _check(pairwise: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairwise, values = np.asarray(pairwise, np.float64), np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty (R,) array, got shape {values.shape}")
    if pairwise.shape != (len(values), len(values)):
        raise ValueError(f"pairwise distances must be ({len(values)}, {len(values)}), got {pairwise.shape}")
    if not (np.isfinite(pairwise).all() and np.isfinite(values).all()) or pairwise.min() < 0:
        raise ValueError("pairwise distances must be finite and non-negative, values finite")
    return pairwise, values


class GPValueModel:
    """GP regression of record values on batch distances; see the module docstring for the model.

    Args:
        pairwise: (R, R) symmetric record-to-record distances, zero diagonal.
        values: (R,) record values.
        hyperparameters: fixed settings; None fits them with `fit_hyperparameters`.
    """

    def __init__(self, pairwise: np.ndarray, values: np.ndarray, hyperparameters: GPHyperparameters | None = None):
        self.pairwise, self.values = _check(pairwise, values)
        self.hyperparameters = (fit_hyperparameters(self.pairwise, self.values) if hyperparameters is None
                                else hyperparameters)
        h = self.hyperparameters
        if not (h.lengthscale > 0 and h.noise_ratio > 0 and h.signal_variance >= 0):
            raise ValueError(f"need lengthscale > 0, noise_ratio > 0, signal_variance >= 0, got {h}")
        eigenvalues, eigenvectors = _psd_eigh(kernel(self.pairwise, h.lengthscale))
        self._solved = _solve(eigenvalues, eigenvectors, max(h.noise_ratio, MIN_NOISE_RATIO), self.values)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def prior_std(self) -> float:
        """sqrt(s2): the spread of batch values the model expects before seeing a batch's distances."""
        return float(np.sqrt(self.hyperparameters.signal_variance))

    def predict(self, distances: np.ndarray) -> Prediction:
        """Mean and standard deviation of the value of a batch at these (R,) distances to the records."""
        distances = np.asarray(distances, np.float64)
        if distances.shape != (len(self),):
            raise ValueError(f"need ({len(self)},) distances to the records, got shape {distances.shape}")
        cross = kernel(distances, self.hyperparameters.lengthscale)  # (R,)
        s = self._solved
        mean = s.beta + float(cross @ s.alpha)
        constant = 1.0 - float(s.inverse_ones @ cross)
        ratio_sq = 1.0 - float(cross @ (s.inverse @ cross)) + constant ** 2 / s.ones_inverse_ones
        ratio = float(np.sqrt(max(ratio_sq, 0.0)))
        return Prediction(mean, ratio * self.prior_std, ratio)

    def predict_many(self, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means (Q,) and standard deviations (Q,) for (Q, R) distances; row q is `predict(distances[q])`."""
        distances = np.asarray(distances, np.float64)
        if distances.ndim != 2 or distances.shape[1] != len(self):
            raise ValueError(f"need (Q, {len(self)}) distances, got shape {distances.shape}")
        cross = kernel(distances, self.hyperparameters.lengthscale)  # (Q, R)
        s = self._solved
        means = s.beta + cross @ s.alpha
        constant = 1.0 - cross @ s.inverse_ones
        ratio_sq = 1.0 - np.einsum("qr,qr->q", cross @ s.inverse, cross) + constant ** 2 / s.ones_inverse_ones
        return means, np.sqrt(np.maximum(ratio_sq, 0.0)) * self.prior_std

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form LOO means (R,) and standard deviations (R,) of each record's value (noise included).

        Record i predicted from the other R - 1 under the same hyperparameters, exactly as a refit
        without it would (R&W eq. 5.12): mean_i = y_i - [P y]_i / P_ii, var_i = s2 / P_ii. With one
        record there is nothing to predict it from: NaN.
        """
        if len(self) < 2:
            return np.full(len(self), np.nan), np.full(len(self), np.nan)
        s = self._solved
        means = self.values - s.loo_residual_scaled / s.p_diagonal
        return means, np.sqrt(self.hyperparameters.signal_variance / s.p_diagonal)


def nested_leave_one_out(pairwise: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(R,) each record's value predicted by a model fitted, hyperparameters included, on the others.

    `GPValueModel.leave_one_out` keeps the hyperparameters chosen with every record, so the record
    left out helped choose them; this refits them each time (R fits: a diagnostic, not for the
    agent's loop). NaN for a table of one record.
    """
    pairwise, values = _check(pairwise, values)
    out = np.full(len(values), np.nan)
    with one_blas_thread():
        for i in range(len(values) if len(values) > 1 else 0):
            keep = np.arange(len(values)) != i
            out[i] = GPValueModel(pairwise[np.ix_(keep, keep)], values[keep]).predict(pairwise[i, keep]).mean
    return out

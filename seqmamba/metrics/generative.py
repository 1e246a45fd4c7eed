"""FID, IS, mIS and AM from classifier features and class probabilities (Mamba paper 4.4, SaShiMi App. C.3).

With p(y|x) the classifier's class probabilities for a clip x and f(x) its penultimate features:

- FID = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)), Gaussian fits of reference (train split)
  and generated features. tr((S_r S_g)^(1/2)) is computed as the sum of square roots of the eigenvalues
  of S_r^(1/2) S_g S_r^(1/2) (symmetric PSD, so real and >= 0); the result is clamped at 0, so the FID
  of a set with itself is 0, never slightly negative.
- IS = exp E_x KL(p(y|x) || p(y)), p(y) = E_x p(y|x) over the same set (higher: confident and diverse).
- mIS = exp E_{x, x'} KL(p(y|x) || p(y|x')), x and x' drawn independently from the set (exactly, over all
  pairs, in O(N C)); rewards confident predictions that differ between clips.
- AM = KL(E_ref p(y|x) || E_gen p(y|x)) + E_gen H(p(y|x)) (lower is better).

All in float64 numpy; probabilities are clipped at 1e-12 inside logarithms.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np

EPS = 1e-12


def _as_probs(probs, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"{name} must be (n_samples >= 1, n_classes >= 2), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < -1e-9).any():
        raise ValueError(f"{name}: probabilities must be finite and >= 0")
    sums = p.sum(axis=1)
    if np.abs(sums - 1).max() > 1e-4:
        raise ValueError(f"{name}: rows must sum to 1 (softmax outputs); a row sums to {sums[np.argmax(np.abs(sums - 1))]:.6f}")
    return np.clip(p, 0.0, 1.0)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of (N, D) features, float64, unbiased covariance (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (n_samples >= 2, dim), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); >= 0, and 0 for identical statistics."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"FID: shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    scale = float(np.trace(sigma1) + np.trace(sigma2) + 1e-30)
    if abs(value) < 1e-12 * scale:  # the eigen-solver's round-off of an exact 0 (identical statistics)
        value = 0.0
    return max(value, 0.0)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(np.clip(p, EPS, None)) - np.log(np.clip(q, EPS, None)))).sum(axis=-1)


def inception_score(probs) -> float:
    """exp E_x KL(p(y|x) || p(y)) with p(y) the mean prediction of the same set."""
    p = _as_probs(probs)
    return float(np.exp(_kl_rows(p, p.mean(axis=0, keepdims=True)).mean()))


def modified_inception_score(probs) -> float:
    """exp E_{x,x'} KL(p(y|x) || p(y|x')) over all ordered pairs (x = x' included, as independent draws)."""
    p = _as_probs(probs)
    logp = np.log(np.clip(p, EPS, None))
    neg_entropy = (p * logp).sum(axis=1).mean()  # E_x sum_c p log p
    cross = (p.mean(axis=0) * logp.mean(axis=0)).sum()  # E_{x,x'} sum_c p(c|x) log p(c|x')
    return float(np.exp(neg_entropy - cross))


def am_score(ref_probs, gen_probs) -> float:
    """KL(E_ref p(y|x) || E_gen p(y|x)) + E_gen H(p(y|x)); lower is better."""
    r, g = _as_probs(ref_probs, "ref_probs"), _as_probs(gen_probs, "gen_probs")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"AM: {r.shape[1]} reference classes vs {g.shape[1]} generated")
    entropy = -(g * np.log(np.clip(g, EPS, None))).sum(axis=1).mean()
    return float(_kl_rows(r.mean(axis=0), g.mean(axis=0)) + entropy)


@dataclass
class GenerativeScores:
    fid: float
    inception: float
    modified_inception: float
    am: float
    n_samples: int

    def as_dict(self, prefix: str = "") -> Dict[str, float]:
        names = {"fid": "fid", "inception": "is", "modified_inception": "mis", "am": "am", "n_samples": "n"}
        return {prefix + names[k]: v for k, v in asdict(self).items()}


def score_samples(ref_features, ref_probs, gen_features, gen_probs) -> GenerativeScores:
    """All four metrics of generated clips against reference (train split) features and probabilities."""
    mu_r, s_r = feature_statistics(ref_features)
    mu_g, s_g = feature_statistics(gen_features)
    return GenerativeScores(fid=frechet_distance(mu_r, s_r, mu_g, s_g), inception=inception_score(gen_probs),
                            modified_inception=modified_inception_score(gen_probs),
                            am=am_score(ref_probs, gen_probs), n_samples=int(np.asarray(gen_probs).shape[0]))

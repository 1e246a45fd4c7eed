"""Sample-quality metrics computed from a classifier's outputs: FID, IS, mIS, AM (SC09 protocol)."""
from .generative import (GenerativeScores, am_score, feature_statistics, frechet_distance, inception_score,
                         modified_inception_score, score_samples)

__all__ = ["frechet_distance", "feature_statistics", "inception_score", "modified_inception_score", "am_score",
           "score_samples", "GenerativeScores"]

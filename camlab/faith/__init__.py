"""Faithfulness metrics that need the model: does its score depend on the pixels a map highlights?

Pure functions in :mod:`camlab.faith.functional` (Average Drop / Increase in Confidence, insertion / deletion,
ROAD) over the batched perturbations of :mod:`camlab.faith.perturb`, and one thin
:class:`FaithfulnessMetrics` (:mod:`camlab.faith.metric`) keeping per-image rows. The metrics that need only the
map and the boxes / masks (pointing game, relevance mass, ...) are in :mod:`camlab.wsol.pointing`.
"""

from camlab.faith.functional import auc, average_drop_increase, insertion_deletion, road, scores
from camlab.faith.metric import FAITH_METRICS, HIGHER_IS_BETTER, FaithfulnessMetrics, FaithReport
from camlab.faith.perturb import SUBSTRATES, linear_imputation, pixel_ranks, substrate

__all__ = ["FAITH_METRICS", "HIGHER_IS_BETTER", "SUBSTRATES", "FaithReport", "FaithfulnessMetrics", "auc",
           "average_drop_increase", "insertion_deletion", "linear_imputation", "pixel_ranks", "road", "scores",
           "substrate"]

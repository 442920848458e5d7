"""Online data curation while a model trains: layer-aware influence (LAI) and the scores it is compared with."""

from dataworth.curation.capture import LayerCapture
from dataworth.curation.curator import METHODS, Curator
from dataworth.curation.policies import POLICIES
from dataworth.curation.scores import Side, adam_scores, ghost_scores, lai_scores, small_loss_scores, validation_means

__all__ = ["Curator", "LayerCapture", "METHODS", "POLICIES", "Side", "adam_scores", "ghost_scores", "lai_scores", "small_loss_scores", "validation_means"]

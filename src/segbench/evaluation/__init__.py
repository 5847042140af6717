"""Scoring nets: the objective and losses, metrics, evaluation, predictions, the forward benchmark, the VOC
test submission and the authors' released models."""

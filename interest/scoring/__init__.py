"""Ranking a split's held-out targets: the metrics and the model/popularity scorers that training
(validation, early stopping) and evaluation (the test report) share."""

"""Budgeted hyperparameter tuning of one method on one request (`expunge escalate --tune`): trials trained from
the warm base model on a validation split, judged by a cheap proxy of the unit and control stages, pruned when
they stall or break the retain slice; the winner is then run on the request's own rows and verified in full."""

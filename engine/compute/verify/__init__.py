"""Verification: the three stages (unit, control, reconstruction) and the metrics they report.

`engine.compute.verify.metrics` holds the pure metric definitions (numbers and strings, no torch) so the
API server, reports and tests can use them without a framework; `engine.compute.verify.scoring` holds the
batched torch-level scorers and is only imported inside the worker."""

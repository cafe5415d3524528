class SpecError(ValueError):
    """Bad input from the operator: a message that names the problem, raised before any job is queued."""

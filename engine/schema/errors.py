class SpecError(ValueError):
    """Bad input from the operator: a message that names the problem, raised before any job is queued."""


class NotFound(LookupError):
    """A request, job or model id that does not exist (the API answers 404)."""


class Forbidden(PermissionError):
    """The caller may not do this (a role it lacks, or its own job under four-eyes acceptance): HTTP 403."""

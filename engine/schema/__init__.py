"""The engine's contracts, torch-free and textual-free: the request spec and row validation, errors, policies,
status and stage names, the worker's payload and result, the API's read models. The one part of the engine the
console imports at module level."""

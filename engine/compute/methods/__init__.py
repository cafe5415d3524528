"""Unlearning methods, one file each, registered by name. Importing this package must stay light:
a method module imports torch inside its functions, never at module level (the API server validates
methods and hyperparameters without loading a framework)."""

from engine.compute.methods.base import REGISTRY, Method, get_method, list_methods, validate_hyper

__all__ = ["REGISTRY", "Method", "get_method", "list_methods", "validate_hyper"]

"""Executors: who runs a claimed job. `local` (no executor object: the scheduler's own worker subprocesses,
one per GPU, or one CPU slot) is the default and needs nothing more; `ray` (engine.control.executors.ray_executor)
runs each job on an actor of a Ray cluster. The choice comes from `expunge engine start --ray ADDRESS`
or from the engine config (<config>/engine.toml):

    executor = "ray"          # local | ray
    [ray]
    address = "auto"          # "auto": the cluster this host has joined (RAY_ADDRESS, or `ray start`'s)
    gpus = 2                  # how many GPUs to use (default: all the cluster has); CPU-only: slots
    cpus_per_slot = 1         # CPUs each slot asks for (and its worker's torch threads)
    ship_models = "auto"      # auto: ship when a node cannot read the path | always | never
    node_dir = "/tmp/expunge-ray"   # the nodes' folder for job files and shipped models
"""

from __future__ import annotations

import tomllib

from store.paths import Paths

INSTALL_HINT = "pip install 'expunge[ray]'"
SHIP_CHOICES = ("auto", "always", "never")


class ExecutorError(RuntimeError):
    """The executor asked for cannot be used (not installed, a bad setting, no cluster at the address)."""


def require_ray():
    """The ray module, or ExecutorError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"the Ray executor needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def engine_config(paths: Paths) -> dict:
    path = paths.config / "engine.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ExecutorError(f"{path}: not valid TOML: {exc}") from None


def ray_settings(paths: Paths, address: str | None = None, gpus: int | None = None) -> dict | None:
    """The Ray executor's settings (flags over the config file), or None for the local executor."""
    config = engine_config(paths)
    executor = config.get("executor", "local")
    if executor not in ("local", "ray"):
        raise ExecutorError(f"{paths.config / 'engine.toml'}: executor must be \"local\" or \"ray\", not {executor!r}")
    if address is None and executor != "ray":
        return None
    section = dict(config.get("ray") or {})
    settings = {"address": address or section.get("address") or "auto",
                "gpus": gpus if gpus is not None else section.get("gpus"),
                "cpus_per_slot": int(section.get("cpus_per_slot", 1)),
                "ship_models": section.get("ship_models", "auto"),
                "node_dir": section.get("node_dir", "/tmp/expunge-ray")}
    if settings["ship_models"] not in SHIP_CHOICES:
        raise ExecutorError(f"ray.ship_models must be one of {', '.join(SHIP_CHOICES)}, "
                            f"not {settings['ship_models']!r}")
    if settings["gpus"] is not None and int(settings["gpus"]) < 1:
        raise ExecutorError(f"gpus must be at least 1, not {settings['gpus']}")
    return settings


def make_executor(paths: Paths, address: str | None = None, gpus: int | None = None):
    """None (the local worker subprocesses) or a connected RayExecutor."""
    settings = ray_settings(paths, address, gpus)
    if settings is None:
        return None
    require_ray()
    from engine.control.executors.ray_executor import RayExecutor

    return RayExecutor(paths, **settings)

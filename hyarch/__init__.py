"""hyarch: search for hybrid (mechanistic + neural) models of dynamical systems.

A candidate file needs ``HybridModel`` and ``Closure``; the rest is the library API.
"""

__version__ = "0.1.0"

__all__ = [
    "Closure", "ContractError", "HybridModel", "evaluate", "leaderboard", "load_space", "search",
    "load_run", "__version__",
]


_LAZY = {
    "HybridModel": ("hyarch.core.model", "HybridModel"),
    "ContractError": ("hyarch.core.model", "ContractError"),
    "Closure": ("hyarch.core.closure", "Closure"),
}


def __getattr__(name):  # torch and the rest load lazily so `hyarch --help` starts fast
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    if name == "evaluate":
        from hyarch.evaluate import evaluate
        return evaluate
    if name == "load_space":
        from hyarch.spaces.loader import load_space
        return load_space
    if name == "search":
        from hyarch.agent.loop import search
        return search
    if name == "leaderboard":
        from hyarch.api import leaderboard
        return leaderboard
    if name == "load_run":
        from hyarch.runs import load_run
        return load_run
    raise AttributeError(f"module 'hyarch' has no attribute {name!r}")

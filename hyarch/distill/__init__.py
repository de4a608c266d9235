"""From networks back to mechanisms: closure distillation and identifiability.

``distill_candidate(space, source, model)`` turns each trained closure into a sparse sum
of readable terms and a new mechanistic candidate file; ``identifiability(space, source,
model)`` says which physical parameters the data pin down and which move when the
closures' capacity changes. Names load lazily (torch, PySINDy) so the CLI starts fast.
"""

import importlib

_NAMES = {
    "distill_candidate": "hyarch.distill.api", "format_distillation": "hyarch.distill.api",
    "grammar_terms": "hyarch.distill.api", "Distillation": "hyarch.distill.distillation",
    "DistillError": "hyarch.distill.distillation", "distill": "hyarch.distill.distillation",
    "format_identifiability": "hyarch.distill.identifiability",
    "identifiability": "hyarch.distill.identifiability",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'hyarch.distill' has no attribute {name!r}")

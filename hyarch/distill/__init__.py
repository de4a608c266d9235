"""From networks back to mechanisms: closure distillation and identifiability.

``distill_candidate(space, source, model)`` (run in the sandbox's child, on the trained
model) turns each trained closure into a sparse sum of readable terms and a new mechanistic
candidate file; ``identifiability(space, source)`` trains the candidate in the sandbox and
says which physical parameters the data pin down and which move when the closures'
capacity changes.
"""

from hyarch.distill.api import distill_candidate, format_distillation, grammar_terms
from hyarch.distill.distillation import Distillation, DistillError, distill
from hyarch.distill.identifiability import format_identifiability, identifiability

__all__ = ["DistillError", "Distillation", "distill", "distill_candidate",
           "format_distillation", "format_identifiability", "grammar_terms", "identifiability"]

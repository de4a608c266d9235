"""``Closure``: the neural part of a hybrid model.

Every network in a candidate is a Closure so that the core can (a) record its outputs
during a rollout, for the closure-norm regularizer, and (b) switch it to its null value
(0 when additive, 1 when multiplicative) to run the reduced, mechanism-only model.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Sequence

import torch
from torch import nn

from hyarch.core.model import ContractError, Named

# The model whose setup() is running: closures read replicas and input scales from it.
_BUILDING: contextvars.ContextVar = contextvars.ContextVar("hyarch_building", default=None)

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "silu": nn.functional.silu,
               "softplus": nn.functional.softplus, "gelu": nn.functional.gelu}
KINDS = ("additive", "multiplicative")


class Closure(nn.Module):
    """An MLP over named states/inputs, null at initialisation.

    ``Closure(inputs=("theta", "omega"), hidden=(64, 64))`` is called as
    ``self.correction(s.theta, s.omega)`` (or with the whole ``s``) and returns one value
    per trajectory (or ``(..., outputs)`` for ``outputs > 1``). ``kind="multiplicative"``
    returns ``1 + net(x)``. Inputs are divided by their training-data scale when the core
    knows it, so a state in the thousands does not saturate the network.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        hidden: Sequence[int] = (64, 64),
        *,
        outputs: int = 1,
        kind: str = "additive",
        activation: str = "tanh",
        scale: float = 1.0,
        time: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(inputs, str):
            inputs = (inputs,)
        if kind not in KINDS:
            raise ContractError(f"Closure kind {kind!r} is not one of {', '.join(KINDS)}")
        if activation not in ACTIVATIONS:
            raise ContractError(
                f"Closure activation {activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.input_names = tuple(inputs)
        self.hidden = tuple(int(h) for h in hidden)
        self.outputs = int(outputs)
        self.kind = kind
        self.activation = activation
        self.scale = float(scale)
        self.time = bool(time)
        model = _BUILDING.get()
        self.replicas = model.replicas if model is not None else 1
        scales = model.scales if model is not None else {}
        if model is not None:
            known = set(model.state_names) | set(model.input_names)
            unknown = [n for n in self.input_names if n not in known]
            if unknown:
                raise ContractError(
                    f"Closure input(s) {', '.join(map(repr, unknown))} are not states or inputs"
                    f" (valid: {', '.join(sorted(known))})"
                )
        in_scale = [float(scales.get(n, 1.0)) or 1.0 for n in self.input_names]
        if self.time:
            in_scale.append(float(scales.get("__time__", 1.0)) or 1.0)
        self.register_buffer("in_scale", torch.tensor(in_scale))
        # multiplying is as cheap as dividing, but a non-persistent buffer keeps old weights
        # loadable and moves with the module (cuda)
        self.register_buffer("_inv_scale", 1.0 / torch.tensor(in_scale), persistent=False)
        sizes = [len(in_scale), *self.hidden, self.outputs]
        R = self.replicas
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            w = torch.empty(R, a, b)
            if last:
                nn.init.zeros_(w)  # start at the null value: the mechanism alone
            else:
                bound = math.sqrt(6.0 / (a + b))
                nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(R, b)))
        self.null = False
        self.record: list[torch.Tensor] | None = None
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) per layer as the matmuls take them, the input scaling folded
        into the first weight: (x / scale) @ W = x @ (W / scale[:, None])."""
        if self.replicas == 1:
            ws = [w[0] for w in self.weights]
            bs = [b[0] for b in self.biases]
        else:
            ws = list(self.weights)
            bs = [b.unsqueeze(1) for b in self.biases]
        ws[0] = ws[0] * self._inv_scale[:, None]
        return list(zip(ws, bs, strict=True))

    @contextlib.contextmanager
    def prepared(self):
        """Build ``layers()`` once for a whole rollout (hundreds of calls) instead of at
        every call: the per-call indexing and scaling were a third of the closure's cost."""
        outer = self._layers is not None
        if not outer:
            self._layers = self.layers()
        try:
            yield self
        finally:
            if not outer:
                self._layers = None

    def net(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP on raw (unscaled) inputs."""
        act = ACTIVATIONS[self.activation]
        layers = self._layers if self._layers is not None else self.layers()
        n = len(layers)
        lead = x.shape[:-1]
        if self.replicas == 1:
            x = x.reshape(-1, x.shape[-1])
            for i, (w, b) in enumerate(layers):
                x = torch.addmm(b, x, w)  # one fused op per layer
                if i < n - 1:
                    x = act(x)
        else:
            x = x.reshape(lead[0], -1, x.shape[-1])
            for i, (w, b) in enumerate(layers):
                x = torch.baddbmm(b, x, w)
                if i < n - 1:
                    x = act(x)
        x = x.reshape(*lead, x.shape[-1])
        return x if self.scale == 1.0 else x * self.scale

    def forward(self, *args: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if len(args) == 1 and isinstance(args[0], Named):
            s = args[0]
            args = tuple(s[n] for n in self.input_names)
        if len(args) != len(self.input_names):
            raise ContractError(
                f"Closure over {self.input_names} called with {len(args)} tensor(s);"
                f" pass them in that order"
            )
        ref = args[0]
        if self.null:
            shape = ref.shape if self.outputs == 1 else (*ref.shape, self.outputs)
            fill = 1.0 if self.kind == "multiplicative" else 0.0
            return torch.full(shape, fill, dtype=ref.dtype, device=ref.device)
        cols = [a if isinstance(a, torch.Tensor) and a.shape == ref.shape
                else torch.as_tensor(a, dtype=ref.dtype, device=ref.device).expand(ref.shape)
                for a in args]
        if self.time:
            tt = torch.as_tensor(t if t is not None else 0.0, dtype=ref.dtype, device=ref.device)
            cols.append(tt.expand(ref.shape))
        g = self.net(torch.stack(cols, dim=-1))
        if self.outputs == 1:
            g = g.squeeze(-1)
        if self.record is not None:
            self.record.append(g)
        return 1.0 + g if self.kind == "multiplicative" else g

    def extra_repr(self) -> str:
        return (f"inputs={self.input_names}, hidden={self.hidden}, kind={self.kind!r},"
                f" replicas={self.replicas}")


class RemovedClosure(nn.Module):
    """What ``HybridModel.without_closure`` leaves where a Closure was: its null value (0, or
    1 for a multiplicative one) with no weights, called like the closure it replaces. Not a
    Closure: the model it sits in has no network."""

    def __init__(self, inputs: Sequence[str], *, outputs: int = 1,
                 kind: str = "additive") -> None:
        super().__init__()
        self.input_names = tuple(inputs)
        self.outputs = int(outputs)
        self.kind = kind

    def forward(self, *args, t: torch.Tensor | None = None) -> torch.Tensor:
        ref = args[0] if args else torch.zeros(())
        if isinstance(ref, Named):
            ref = ref[self.input_names[0]]
        ref = torch.as_tensor(ref)
        shape = ref.shape if self.outputs == 1 else (*ref.shape, self.outputs)
        return torch.full(shape, 1.0 if self.kind == "multiplicative" else 0.0,
                          dtype=ref.dtype, device=ref.device)

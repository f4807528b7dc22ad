"""Clamp the parameters a model declares (temperatures, logit scales) after every optimizer step.

Contrastive models keep their temperature in bounds: CLIP (Radford et al., 2021) and DiHT (arXiv 2301.02280) clip
the inverse temperature `exp(logit_scale)` at 100, ALBEF (arXiv 2107.07651) and COSMO (arXiv 2312.06112) clamp
`temp` to [0.001, 0.5]. Which parameter and which bounds is the model's business, so a model declares them:

    def clamped_parameters(self) -> dict[str, tuple[float, float]]:
        return {"logit_scale": (0.0, math.log(100.0))}     # name as in named_parameters() -> (low, high)

and `ParameterClampCallback` clamps exactly those, by name, never by guessing from names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["ParameterClampCallback", "declared_clamps"]


def declared_clamps(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """The `{parameter name: (low, high)}` a model declares through `clamped_parameters()` (empty if none).

    The model is unwrapped first (DDP, `torch.compile`); a `peft` model forwards the call to its base model.

    Raises:
        ValueError: a declared name that is not a parameter of the model, or `low > high`.
    """
    model = extract_model_from_parallel(model)
    declare = getattr(model, "clamped_parameters", None)
    clamps = dict(declare()) if callable(declare) else {}
    names = {name for name, _ in model.named_parameters()}
    for name, (low, high) in clamps.items():
        if name not in names:
            raise ValueError(f"{type(model).__name__}.clamped_parameters() names {name!r}, which is not one of its "
                             "parameters")
        if low > high:
            raise ValueError(f"clamp of {name!r}: low {low} > high {high}")
    return clamps


class ParameterClampCallback(TrainerCallback):
    """After each optimizer step, clamp every parameter the model declares (`declared_clamps`) to its bounds.

    Under DeepSpeed the optimizer owns a float32 master copy that would overwrite a clamp of the model's parameter
    at the next step, so the master is clamped too (`deepspeed.utils.safe_set_full_fp32_param`), and under ZeRO-3
    each rank clamps its own shard (clamping is elementwise) before the gathered parameter is clamped.

    Args:
        overrides: `{name: (low, high)}` replacing (or adding to) the model's declaration; `(None, None)` removes a
            clamp (a recipe's argument such as DiHT's `max_logit_scale=0`).
        deepspeed: the model is trained by DeepSpeed (`trainer.is_deepspeed_enabled`). Reading the master copy is a
            collective, so every process must take this path, also those that hold no shard of the parameter.
    """

    def __init__(self, overrides: Mapping[str, tuple[float | None, float | None]] | None = None,
                 deepspeed: bool = False):
        self.overrides, self.deepspeed = dict(overrides or {}), deepspeed
        self._clamps: dict[str, tuple[float, float]] | None = None

    def clamps_for(self, model: torch.nn.Module) -> dict[str, tuple[float, float]]:
        """The declared clamps with the overrides applied."""
        clamps = {**declared_clamps(model), **self.overrides}
        return {name: bounds for name, bounds in clamps.items() if bounds != (None, None)}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._clamps = self.clamps_for(model)
            if not self._clamps:
                logger.info("%s declares no clamped parameters; nothing is clamped", type(model).__name__)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if self._clamps is None:
            self._clamps = self.clamps_for(model)
        parameters = dict(extract_model_from_parallel(model).named_parameters())
        for name, (low, high) in self._clamps.items():
            self.clamp(parameters[name], low, high)

    @torch.no_grad()
    def clamp(self, param: torch.nn.Parameter, low: float, high: float) -> None:
        """Clamp one parameter in place, and its DeepSpeed float32 master copy when there is one."""
        if self.deepspeed:
            import deepspeed
            from deepspeed import utils as ds

            if hasattr(param, "ds_id"):  # ZeRO-3: each rank clamps its own shard of the master
                shard = ds.safe_get_local_fp32_param(param)
                if shard is not None and shard.numel():
                    ds.safe_set_local_fp32_param(param, shard.clamp(low, high))
            else:  # ZeRO-1/2: reading the whole master is a collective on every rank
                master = ds.safe_get_full_fp32_param(param)
                if master is not None:
                    ds.safe_set_full_fp32_param(param, master.clamp(low, high))
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=hasattr(param, "ds_id")):
                param.data.clamp_(low, high)
            return
        param.data.clamp_(low, high)

"""Trainer callbacks shared by the contrastive recipes."""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

__all__ = ["LogitScaleClampCallback"]


class LogitScaleClampCallback(TrainerCallback):
    """Clamp every `logit_scale` parameter to [0, ln(max_logit_scale)] after each optimizer step.

    CLIP (Radford et al., 2021) clips the inverse temperature at 100 to keep training stable; open_clip and DiHT's
    training follow. Under DeepSpeed the optimizer owns a float32 master copy that would overwrite a clamp of the
    model's parameter at the next step, so the master is clamped too (`deepspeed.utils.safe_set_full_fp32_param`),
    and under ZeRO-3 the partitioned parameter is gathered first.

    Args:
        max_logit_scale: the largest inverse temperature, exp of the largest allowed `logit_scale`.
        deepspeed: the model is trained by DeepSpeed (`trainer.is_deepspeed_enabled`). Reading the master copy is a
            collective, so every process must take this path, also those that hold no shard of the parameter.
    """

    def __init__(self, max_logit_scale: float = 100.0, deepspeed: bool = False):
        if max_logit_scale <= 1:
            raise ValueError(f"max_logit_scale must exceed 1, got {max_logit_scale}.")
        self.upper, self.deepspeed = math.log(max_logit_scale), deepspeed

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        for name, param in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "logit_scale":
                self.clamp(param)

    @torch.no_grad()
    def clamp(self, param: torch.nn.Parameter) -> None:
        """Clamp one parameter in place, and its DeepSpeed float32 master copy when there is one."""
        if self.deepspeed:
            import deepspeed
            from deepspeed import utils as ds

            if hasattr(param, "ds_id"):  # ZeRO-3: each rank clamps its own shard of the master (clamp is elementwise)
                shard = ds.safe_get_local_fp32_param(param)
                if shard is not None and shard.numel():
                    ds.safe_set_local_fp32_param(param, shard.clamp(0, self.upper))
            else:  # ZeRO-1/2: reading the whole master is a collective on every rank
                master = ds.safe_get_full_fp32_param(param)
                if master is not None:
                    ds.safe_set_full_fp32_param(param, master.clamp(0, self.upper))
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=hasattr(param, "ds_id")):
                param.data.clamp_(0, self.upper)
            return
        param.data.clamp_(0, self.upper)

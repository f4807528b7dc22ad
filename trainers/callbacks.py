"""Trainer callbacks shared by the contrastive recipes."""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

__all__ = ["DeltaBallProjectionCallback", "LogitScaleClampCallback"]


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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside data-parallel, `torch.compile` and `peft` wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            inner = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile
            inner = model._orig_mod
        elif callable(getattr(model, "get_base_model", None)):  # a PeftModel: the model with its adapters injected
            inner = model.get_base_model()
        else:
            return model
        if inner is model:
            return model
        model = inner


class DeltaBallProjectionCallback(TrainerCallback):
    """Projected gradient descent for DiHT's prompt-initialised few-shot head (arXiv 2301.02280, §few-shot).

    After every optimizer step (not after each gradient-accumulation micro-step) it calls the model's
    `project_residuals_()`, which rescales the residual W onto the δ-ball and b onto the δ_b-ball
    (`modeling_diht.DiHTForImageClassification`, PAPERS.md §1.5). The model is unwrapped first (DDP,
    `torch.compile`, a `peft` model with LoRA adapters and `modules_to_save`). Use it with a plain optimizer
    (`optim="sgd"`): with momentum or Adam the step is no longer a gradient step, though the iterates still stay in
    the balls.

    DeepSpeed is refused: its float32 master copy of the residuals would undo the projection at the next step.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "deepspeed", None):
            raise NotImplementedError("DeltaBallProjectionCallback does not project DeepSpeed's float32 master copy; "
                                      "train the few-shot head without DeepSpeed (it is small) or with DDP.")
        if model is not None and not hasattr(_unwrap(model), "project_residuals_"):
            raise TypeError(f"{type(_unwrap(model)).__name__} has no `project_residuals_()`; this callback is for "
                            "modeling_diht.DiHTForImageClassification.")

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            _unwrap(model).project_residuals_()

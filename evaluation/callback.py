"""Zero-shot evaluation every N optimizer steps during pretraining, as a Trainer callback."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from transformers import TrainerCallback

from .tasks import ClassificationTask, RetrievalTask, flat_metrics

logger = logging.getLogger(__name__)


class ZeroShotEvaluationCallback(TrainerCallback):
    """Runs zero-shot tasks (DiHT's protocols, PAPERS.md §1.6) every `eval_steps` optimizer steps and at the end.

    Metrics are logged as `zero_shot/<task>/<metric>` (e.g. `zero_shot/classification/top1`) through the trainer's
    `log`, so they reach its log history and every reporting integration (TensorBoard, W&B...). `ContrastiveTrainer`
    attaches itself to this callback; with any other `Trainer`, call `callback.attach(trainer)` (without it the
    metrics go to `state.log_history` only).

    Every process evaluates: under DeepSpeed ZeRO-3 each forward gathers the weights collectively, so one process
    alone would hang. The model is put back in training mode afterwards.

    Args:
        tasks: `ClassificationTask`s and `RetrievalTask`s.
        tokenizer, image_processor: the checkpoint's preprocessing.
        eval_steps: evaluate when `global_step % eval_steps == 0`; 0 evaluates at the end of training only.
        at_train_end: also evaluate after the last step (unless it was just evaluated).
        batch_size: images per forward.

    Example:
        >>> from evaluation import ClassificationTask, ZeroShotEvaluationCallback
        >>> callback = ZeroShotEvaluationCallback([ClassificationTask(dataset=[], templates=["a photo of a {}."])],
        ...                                       tokenizer=None, image_processor=None, eval_steps=500)
        >>> callback.eval_steps
        500
    """

    def __init__(self, tasks: Sequence[ClassificationTask | RetrievalTask], tokenizer, image_processor, *,
                 eval_steps: int, at_train_end: bool = True, batch_size: int = 64):
        if eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0; got {eval_steps}")
        self.tasks = list(tasks)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.eval_steps, self.at_train_end, self.batch_size = eval_steps, at_train_end, batch_size
        self.trainer = None
        self._last_step = -1

    def attach(self, trainer) -> None:
        """Log through `trainer.log` (reporting integrations included)."""
        self.trainer = trainer

    def evaluate(self, model, state) -> dict[str, float]:
        was_training = model.training
        records = [task.run(model, self.tokenizer, self.image_processor, batch_size=self.batch_size)
                   for task in self.tasks]
        model.train(was_training)
        metrics = flat_metrics(records)
        if self.trainer is not None:
            self.trainer.log(dict(metrics))
        else:
            state.log_history.append({**metrics, "step": state.global_step})
        logger.info("zero-shot evaluation at step %d: %s", state.global_step, metrics)
        self._last_step = state.global_step
        return metrics

    def on_step_end(self, args, state, control, model=None, **kwargs: Any):
        if self.eval_steps and state.global_step % self.eval_steps == 0:
            self.evaluate(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs: Any):
        if self.at_train_end and self._last_step != state.global_step:
            self.evaluate(model, state)

"""Arguments of `CosmoTrainer`: S-ITC, GRIT grouped mini-batches and connection mining (arXiv 2312.06112)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arguments import ContrastiveTrainingArguments

__all__ = ["CosmoTrainingArguments"]


@dataclass
class CosmoTrainingArguments(ContrastiveTrainingArguments):
    """Arguments of [`CosmoTrainer`] (COSMO/MAFA arXiv 2312.06112; GRIT-VLP arXiv 2208.04060; ALBEF arXiv 2107.07651).

    Defaults are the papers' and the official code's: ε = 0.5 from the second epoch on, GRIT buffers of 48,000 pairs
    in search spaces of 1,920 per 128-pair batch (scaled with the batch size), ECM thresholds 0.5 and 0.8. Where the
    code and the papers leave a choice (the ITC over the global batch, the grouping under several processes), the
    default is ours and the other is one argument away.
    """

    task: str = field(default="pretrain", metadata={
        "help": "pretrain (ITC + ITM + MLM, GRIT, ECM) or retrieval_finetune (ITC with same-image positives + ITM "
                "whose negatives never share an image; no MLM)", "choices": ["pretrain", "retrieval_finetune"]})
    itc_scope: str = field(default="global", metadata={
        "help": "global: ITC over the gathered batch of all processes; per_process: over each process's batch (the "
                "official code)", "choices": ["global", "per_process"]})
    itc_smoothing: float = field(default=0.5, metadata={"help": "S-ITC's ε: targets (1 - ε) y + ε / B."})
    itc_smoothing_start_epoch: int = field(default=1, metadata={
        "help": "First (0-based) epoch with S-ITC; the official code switches it on when grouped batches start."})
    itm_hard_negatives_start_epoch: int = field(default=0, metadata={
        "help": "First (0-based) epoch whose ITM negatives are the hardest in-batch ones (config.hard_negative_mode); "
                "before it they are drawn uniformly, and ECM waits. The papers start from pre-trained encoders with "
                "hard negatives at once (0); from random weights an ITM trained on hard negatives alone can stay at "
                "the class prior (itm_prior_loss)."})
    grouped_batches: bool = field(default=True, metadata={"help": "GRIT's grouped mini-batches from epoch 1 on."})
    grit_buffer_size: int | None = field(default=None, metadata={
        "help": "Pairs collected before a grouping (default: 375 x the batch, GRIT's 48,000 at 128)."})
    grit_search_space: int | None = field(default=None, metadata={
        "help": "Pairs per greedy chain (default: 15 x the batch, GRIT's 1,920 at 128)."})
    grit_grouping: str = field(default="global", metadata={
        "help": "global: group the gathered buffer of all processes (a global batch is one group); per_process: "
                "each process groups its own pairs (the official code)", "choices": ["global", "per_process"]})
    connection_mining: bool = field(default=True, metadata={"help": "COSMO's ECM with --discriminator."})
    discriminator: str | None = field(default=None, metadata={
        "help": "A frozen ITM model for ECM: a COSMO folder or a transformers BlipForImageTextRetrieval folder."})
    ecm_low: float = field(default=0.5, metadata={"help": "ECM: match probability below which a pair is a negative."})
    ecm_high: float = field(default=0.8, metadata={"help": "ECM: match probability above which it is converted."})
    ecm_cache_unimodal: bool = field(default=False, metadata={
        "help": "ECM: keep the discriminator's image and text states per dataset row after their first step, so that "
                "later steps run only its fusion layers (memory: one image's states per row)."})
    ecm_history: int = field(default=0, metadata={
        "help": "ECM: keep the last N decisions (dataset-index pairs) for measuring precision; 0 keeps none."})

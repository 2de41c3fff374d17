"""DPO training of vision-language models on TRL + PEFT + accelerate.

- `bpo.train.runner.train`: a run from a recipe (`bpo train`).
- `bpo.train.data`: pairs read, checked, tokenized once and cached; the batch collator.
- `bpo.train.reference`: reference log-probs computed once and cached.
- `bpo.train.trainer.BpoDPOTrainer`: `trl.DPOTrainer` on those.
- `bpo.train.model`: model, processor, LoRA targets.
- `bpo.train.callbacks.MetricsLogger`: ``metrics.jsonl``.
- `bpo.train.export.export_run`: a merged standard checkpoint (`bpo export`).

Submodules import torch and transformers; import them where they are used.
"""

# `bpo.train(...)` runs the stage, as `bpo train` does (`bpo.api`).
from bpo.api import callable_stage

callable_stage(__name__, "train")

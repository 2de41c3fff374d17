"""DPO training of vision-language models on TRL + PEFT + accelerate.

- `bpo.train.runner.train`: a run from a recipe (`bpo train`).
- `bpo.train.data`: pairs read, checked, tokenized once and cached.
- `bpo.train.collator.PreferenceCollator`: TRL's batch, built through the family's processor.
- `bpo.train.shared_prompt`: each pair's prompt and image run once for both responses.
- `bpo.train.reference`: reference log-probs computed once and cached.
- `bpo.train.run_folder`: the run folder's settings record and its checkpoints.
- `bpo.train.progress`: the console's bar, log lines and end-of-run summary.
- `bpo.train.trainer.BpoDPOTrainer`: `trl.DPOTrainer` on those.
- `bpo.train.model`: model, processor, LoRA targets.
- `bpo.train.distributed`: what FSDP and DeepSpeed launches need, and the ones refused.
- `bpo.train.callbacks.MetricsLogger`: ``metrics.jsonl``.
- `bpo.train.export.export_run`: a merged standard checkpoint (`bpo export`).

Submodules import torch and transformers; import them where they are used.
"""

# `bpo.train(...)` runs the stage, as `bpo train` does (`bpo.api`).
from bpo.api import callable_stage

callable_stage(__name__, "train")

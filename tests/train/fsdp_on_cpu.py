"""`python -m tests.train.fsdp_on_cpu ARGS`: `bpo ARGS` with accelerate's FSDP allowed on CPU.

accelerate 1.15 turns an FSDP launch on CPU processes into plain data parallelism
(`accelerate.state.AcceleratorState` enables FSDP for accelerator device types only),
though PyTorch's FSDP2 (``fully_shard``) itself runs on CPU over gloo. This entry point
lifts that one gate, so the FSDP tests run bpo's real FSDP2 code path (sharded
parameters, gathered state dicts, FSDP optimizer checkpoints) on a machine without GPUs.
Nothing else of accelerate, transformers or bpo is changed.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def allow_fsdp_on_cpu() -> None:
    """Make an FSDP launch on CPU processes use FSDP, as it does on GPUs."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    partial_init, accelerator_init = PartialState.__init__, AcceleratorState.__init__

    def init_processes(self: Any, *args: Any, **kwargs: Any) -> None:
        partial_init(self, *args, **kwargs)
        fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        if fsdp and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP  # the state shared by every instance

    def init_accelerator(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        accelerator_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.FSDP and fsdp_plugin is not None:
            self.fsdp_plugin = fsdp_plugin  # accelerate sets it for GPU device types only

    PartialState.__init__ = init_processes  # type: ignore[method-assign]
    AcceleratorState.__init__ = init_accelerator  # type: ignore[method-assign]


if __name__ == "__main__":
    allow_fsdp_on_cpu()
    from bpo.cli import main

    sys.exit(main(sys.argv[1:]))

"""Compatibility shims for the CPU set-up, kept in one place.

transformers 5 builds every video processor on torchvision, and PyPI's
torchvision does not import beside the CPU torch wheel this project installs;
processors with a video part (Qwen2-VL, Qwen2.5-VL, SmolVLM, InternVL ...) then
fail to load even for images, and so does Pixtral's (Mistral 3's), which is
marked as needing torchvision. `allow_processors_without_torchvision` works
around both.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def image_only_video_processor_class() -> Any:
    """Defines `ImageOnlyVideoProcessor` on first use (it subclasses a transformers class)."""
    defined = globals().get("ImageOnlyVideoProcessor")
    if defined is not None:
        return defined
    from transformers.video_processing_utils import VideoProcessorMixin

    class ImageOnlyVideoProcessor(VideoProcessorMixin):
        """Stands in for a torchvision video processor: keeps its config, refuses videos.

        Saved back, its config names the class it stands in for, so the checkpoint
        stays a standard one.
        """

        def __init__(self, video_processor_type: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.stands_in_for = video_processor_type

        def preprocess(self, videos: Any, **kwargs: Any) -> Any:
            raise ImportError(
                f"processing videos with {self.stands_in_for or 'this processor'} needs torchvision"
            )

        def to_dict(self) -> dict[str, Any]:
            config: dict[str, Any] = super().to_dict()
            config.pop("stands_in_for", None)
            config["video_processor_type"] = self.stands_in_for or type(self).__name__
            return config

    # Every video setting the real processors have is an attribute (None unless the saved
    # config gives it), as `BaseVideoProcessor` makes them: processors read some directly
    # (SmolVLM's apply_chat_template reads `num_frames` and `fps`). Class attributes, so
    # `to_dict` (the instance's __dict__) saves only what the config held.
    from transformers.processing_utils import VideosKwargs

    for name in VideosKwargs.__annotations__:
        if not hasattr(ImageOnlyVideoProcessor, name):
            setattr(ImageOnlyVideoProcessor, name, None)

    # A module-level name, so processors holding one pickle (multiprocessing, DataLoader workers).
    ImageOnlyVideoProcessor.__qualname__ = "ImageOnlyVideoProcessor"
    globals()["ImageOnlyVideoProcessor"] = ImageOnlyVideoProcessor
    return ImageOnlyVideoProcessor


def __getattr__(name: str) -> Any:
    # Importing this module stays light; `bpo.compat.ImageOnlyVideoProcessor` still resolves.
    if name == "ImageOnlyVideoProcessor":
        return image_only_video_processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_WITHOUT_TORCHVISION = False  # set once allow_processors_without_torchvision has patched


def allow_processors_without_torchvision() -> None:
    """Let processors that want torchvision (Qwen2-VL, SmolVLM, Pixtral ...) load for images without it.

    transformers 5 builds every video processor on torchvision and checks that a
    processor's video part is a `VideoProcessorMixin`, a class it only exports
    when torchvision is installed, so `AutoProcessor.from_pretrained` on a
    Qwen2-VL checkpoint fails even for images (transformers issue #48558). Where
    torchvision is missing, this exports that class and makes `AutoVideoProcessor`
    return an `ImageOnlyVideoProcessor`: it keeps the saved video config and
    raises on videos. It also makes `PixtralProcessor` importable (see
    `_allow_pixtral_processor`). Idempotent; a no-op when torchvision is installed.
    """
    global _WITHOUT_TORCHVISION
    from transformers.utils import is_torchvision_available

    if is_torchvision_available() or _WITHOUT_TORCHVISION:
        return
    from transformers import processing_utils
    from transformers.video_processing_utils import VideoProcessorMixin

    stand_in = image_only_video_processor_class()
    # The real module: `transformers.models.auto.video_processing_auto` is a dummy without torchvision.
    auto_module = importlib.import_module("transformers.models.auto.video_processing_auto")

    def from_pretrained(
        cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any
    ) -> Any:
        config, _ = VideoProcessorMixin.get_video_processor_dict(
            pretrained_model_name_or_path, **kwargs
        )
        return stand_in.from_dict(config)

    # ProcessorMixin checks a video part against the class of this name in that module.
    processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin  # type: ignore[attr-defined]
    auto_module.AutoVideoProcessor.from_pretrained = classmethod(from_pretrained)
    _allow_pixtral_processor()
    _WITHOUT_TORCHVISION = True


def _allow_pixtral_processor() -> None:
    """Make `PixtralProcessor` (Mistral 3's processor) load without torchvision.

    Its module imports one helper, `get_resize_output_image_size`, from the torchvision
    image processor, and the class is marked as needing torchvision, so transformers
    exports a placeholder that raises. The PIL image processor has the same helper
    ("Adapted from" it, the same arithmetic); this puts a module holding only that
    helper where the import looks, imports the real processor class and exports it
    where `AutoProcessor` looks it up (the `transformers.models.pixtral` package).
    """
    import transformers
    from transformers.models import pixtral
    from transformers.models.pixtral import image_processing_pil_pixtral

    name = "transformers.models.pixtral.image_processing_pixtral"
    if name not in sys.modules:
        helpers = types.ModuleType(
            name, "Stands in for the torchvision module: its resize helper only."
        )
        helpers.get_resize_output_image_size = (  # type: ignore[attr-defined]
            image_processing_pil_pixtral.get_resize_output_image_size
        )
        sys.modules[name] = helpers
    processing_pixtral = importlib.import_module("transformers.models.pixtral.processing_pixtral")
    for module in (pixtral, transformers):
        module.PixtralProcessor = processing_pixtral.PixtralProcessor  # type: ignore[attr-defined]


def torchvision_stand_in_active() -> bool:
    """Whether `allow_processors_without_torchvision` has patched transformers."""
    return _WITHOUT_TORCHVISION

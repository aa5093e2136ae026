"""aticnet: real-time semantic segmentation with ICNet, AtICNet and PSPNet."""

from .api import Segmenter, load
from .models import MODEL_NAMES, ModelConfig, build_model
from .visualize import colorize, overlay

__version__ = "0.1.0"
__all__ = ["MODEL_NAMES", "ModelConfig", "Segmenter", "build_model", "colorize", "from_pretrained", "load", "overlay",
           "save_pretrained", "__version__"]


def __getattr__(name: str):
    """``from_pretrained``, ``save_pretrained`` and ``hub`` (:mod:`aticnet.hub`) load huggingface_hub only when used."""
    if name in ("from_pretrained", "save_pretrained", "hub"):
        import importlib

        hub = importlib.import_module(".hub", __name__)  # not "from . import hub": that would come back here
        return hub if name == "hub" else getattr(hub, name)
    raise AttributeError(f"module 'aticnet' has no attribute {name!r}")

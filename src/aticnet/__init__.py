"""aticnet: real-time semantic segmentation with ICNet, AtICNet and PSPNet."""

from .api import Segmenter, load
from .models import MODEL_NAMES, ModelConfig, build_model
from .visualize import colorize, overlay

__version__ = "0.1.0"
__all__ = ["MODEL_NAMES", "ModelConfig", "Segmenter", "build_model", "colorize", "load", "overlay", "__version__"]

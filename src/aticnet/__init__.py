"""aticnet: real-time semantic segmentation with ICNet, AtICNet and PSPNet."""

from .models import MODEL_NAMES, ModelConfig, build_model

__version__ = "0.1.0"
__all__ = ["MODEL_NAMES", "ModelConfig", "build_model", "__version__"]

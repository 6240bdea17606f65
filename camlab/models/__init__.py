"""Models: backbone registry, the CAM classifier, and CAM models loaded from files (checkpoints, torchvision)."""

from camlab.models.classifier import CAMClassifier
from camlab.models.pretrained import from_torchvision, load_cam_model, load_checkpoint

__all__ = ["CAMClassifier", "from_torchvision", "load_cam_model", "load_checkpoint"]

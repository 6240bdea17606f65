"""Models: backbone registry and the CAM classifier."""

from camlab.models.classifier import CAMClassifier

__all__ = ["CAMClassifier"]

"""camlab: Class Activation Maps and weakly supervised object localization."""

__version__ = "0.1.0"

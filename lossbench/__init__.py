"""lossbench: which segmentation loss should I train with when my classes are badly imbalanced?"""

__version__ = "0.1.0"

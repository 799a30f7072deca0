"""alexnet_cli: reproduce Krizhevsky, Sutskever & Hinton (NIPS 2012), "ImageNet
classification with deep convolutional neural networks", end to end.

The library is usable on its own; the `alexnet` command is a thin layer over it.
"""

__version__ = "0.1.0"

from alexnet_cli.model import AlexNet  # noqa: E402

__all__ = ["AlexNet", "__version__"]

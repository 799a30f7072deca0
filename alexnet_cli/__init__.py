"""alexnet_cli: reproduce Krizhevsky, Sutskever & Hinton (NIPS 2012), "ImageNet
classification with deep convolutional neural networks", end to end.

The library is usable on its own; the `alexnet` command is a thin layer over it.
"""

__version__ = "0.1.0"

__all__ = ["AlexNet", "__version__"]


def __getattr__(name: str):
    """`alexnet_cli.AlexNet`, imported on first use: importing the package (the `alexnet`
    command starting) does not import torch yet, so a Ctrl-C in torch's 2-3 s import lands
    inside the command's error boundary (cli/__init__.py)."""
    if name == "AlexNet":
        from alexnet_cli.model import AlexNet
        return AlexNet
    raise AttributeError(f"module 'alexnet_cli' has no attribute {name!r}")

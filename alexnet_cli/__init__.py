"""alexnet_cli: reproduce Krizhevsky, Sutskever & Hinton (NIPS 2012), "ImageNet
classification with deep convolutional neural networks", end to end.

The library is usable on its own; the `alexnet` command is a thin layer over it (cli/, one
module per subcommand). The modules, by role (docs/paper-to-code.md maps the paper to them):

- data:       images (decode, resize, crop), jpeg (the JPEG codec, CPU and GPU), layouts
              and matfile (ImageNet's folder layouts and label files), prep (`alexnet prep`),
              shards (the shard schema: manifest, readers, byte layouts, the image index),
              loader (batches from shards), pca (`alexnet pca`), augment, synth (generated
              images for the demo and tests), atomic (atomic writes and temporaries)
- network:    config (every paper number, the recipes), model (AlexNet, LRN, dropout),
              lrn_fast and lrn_triton (faster LRN implementations), model_parallel (the two
              columns on two devices), summary (`alexnet summary`)
- training:   train (set-up and the loop), replicas (single, model or data parallel),
              train_state (what a checkpoint continues), runlog (the run folder), optim
              (PaperSGD), schedule, distributed, devices, checkpoint, metrics
- results:    evaluate (`alexnet eval`), predict, kernels, features and neighbors (fc7 and
              figure 4's search), codes (binary codes for that search), report, ablate and variants
              (its list of ablations), figures
- shared:     errors, progress, paths (one path where a list is expected), demo (`alexnet demo`)
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

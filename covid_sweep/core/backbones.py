"""The backbone names TrialConfig accepts, torch-free.

`covid-sweep --help` and `validate` check names against this list without importing torch;
`model/networks.py` maps each name to its torchvision builder and head.
"""

# torchvision's names, so get_model/get_model_weights work with them
BACKBONE_NAMES: tuple[str, ...] = (
    "vgg11_bn", "vgg16", "vgg16_bn",
    "resnet18", "resnet34", "resnet50",
    "googlenet",
    "densenet121",
    "efficientnet_b0",
    "convnext_tiny",
    "mobilenet_v3_small", "mobilenet_v3_large",
)

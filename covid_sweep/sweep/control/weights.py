"""Before a sweep's first trial: the ImageNet weights its trials will load are on this box.

Without them every pretrained trial would fail on its download, one after another, until the sweep gives
up. One line says which are missing and how to get them instead.
"""

from __future__ import annotations

from covid_sweep.core.errors import UserError
from covid_sweep.sweep.control.spec import pretrained_backbones


class MissingWeightsError(UserError, LookupError):
    """A pretrained sweep on a box without the weights it needs."""


def check_weights(config: dict, source: str) -> list[str]:
    """The backbones a pretrained sweep needs weights for (all present), or MissingWeightsError. torch is
    imported only for a sweep that can train from ImageNet weights."""
    names = pretrained_backbones(config)
    if not names:
        return []
    from covid_sweep.model.networks import missing_weights, weights_file

    missing = missing_weights(names)
    if missing:
        where = weights_file(missing[0]).parent
        raise MissingWeightsError(
            f"{source}: ImageNet weights for {', '.join(missing)} are not in {where}; on a box with internet run "
            f"`covid-sweep prefetch-weights --backbone {','.join(missing)}` and copy its TORCH_HOME here (or point "
            "TORCH_HOME at a shared copy), or use the docker image, which has them")
    return names

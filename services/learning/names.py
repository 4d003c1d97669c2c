"""Names of the architectures and methods, importable without torch (for CLI parsers)."""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = (
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "fcn_resnet50",
)

METHODS: tuple[str, ...] = ("ft", "joint", "ld", "le", "ef", "ef+ld", "ld+le", "mib")
# What a service task may ask for: "joint" needs every earlier step's images, which the service
# by design does not keep; it is an upper bound for experiments only.
SERVICE_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "joint")

# The method a task gets when it names none. E_F + L'_D is ILT's best on 19+1 and on the long
# 15+1 x5 sequence (old 72.5 / 70.5 mIoU) and close to the best on 15+5 (method.md's table).
DEFAULT_METHOD = "ef+ld"

"""The model zoo: named models, hub and local checkpoint loading (``diffcodec.load``).

Importing this package is cheap (no torch): ``diffcodec --help`` and ``diffcodec zoo`` stay fast.
"""

from diffcodec.zoo.loader import load, zoo_status
from diffcodec.zoo.registry import ZooEntry, get_entry, list_models, register

__all__ = ["ZooEntry", "get_entry", "list_models", "load", "register", "zoo_status"]

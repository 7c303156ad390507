"""Training data: image folders and WebDataset shards as LightningDataModules; crops, flips and padding."""

from diffcodec.data.crops import Crop
from diffcodec.data.folder import ImageFolder, list_images
from diffcodec.data.modules import ImageFolderDataModule, WebDatasetDataModule
from diffcodec.data.shards import write_shards

__all__ = [
    "Crop",
    "ImageFolder",
    "ImageFolderDataModule",
    "WebDatasetDataModule",
    "list_images",
    "write_shards",
]

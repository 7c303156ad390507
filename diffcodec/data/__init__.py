"""Training data: image folders and WebDataset shards as LightningDataModules; crops, flips and padding."""

from diffcodec.data.crop_bank import CropBank
from diffcodec.data.crops import Crop
from diffcodec.data.folder import ImageFolder, list_images
from diffcodec.data.modules import CropBankDataModule, ImageFolderDataModule, WebDatasetDataModule
from diffcodec.data.shards import write_shards

__all__ = [
    "Crop",
    "CropBank",
    "CropBankDataModule",
    "ImageFolder",
    "ImageFolderDataModule",
    "WebDatasetDataModule",
    "list_images",
    "write_shards",
]

"""Datasets, the batch contract (``collate_wsol``) and the LightningDataModule."""
from camlab.data.canvas import CanvasDataModule, MNISTCanvas
from camlab.data.collate import collate_wsol
from camlab.data.datamodule import WSOLDataModule
from camlab.data.disk import DiskDataModule
from camlab.data.records import Record, RecordDataset
from camlab.data.synthetic import CLASSES, SyntheticShapes, hflip_boxes, tight_box

__all__ = ["CLASSES", "CanvasDataModule", "DiskDataModule", "MNISTCanvas", "Record", "RecordDataset", "SyntheticShapes", "WSOLDataModule", "collate_wsol", "hflip_boxes", "tight_box"]

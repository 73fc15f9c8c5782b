"""The files and folders the embedded demo archives consist of — what the `demo_archives` rule declares as its
outputs. Kept apart from the writers (`archives.py`, which draws the images with numpy, PIL and pandas) so that
planning the workflow reads the list without importing them."""

from __future__ import annotations

from pathlib import Path


def expected_outputs(demo_cfg: dict) -> tuple[list[str], list[str]]:
    """(files, folders) that `write_demo_archives` creates: the demo rule's outputs."""
    root = Path(demo_cfg["output"])
    files = [
        "HAM10000/HAM10000_metadata.csv", "HAM10000/HAM10000_images_part_1.zip", "HAM10000/HAM10000_images_part_2.zip",
        "ISIC2018/ISIC2018_Task3_Test_Input.zip", "ISIC2018/ISIC2018_Task3_Test_GroundTruth.csv",
        "ISIC2018/ISIC2018_Task3_Validation_Input.zip", "ISIC2018/ISIC2018_Task3_Validation_GroundTruth.csv",
        "ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv", "ISIC2020/ISIC_2020_Training_JPEG.zip",
        "ISIC2020/ISIC_2020_Training_Duplicates.csv",
        "ISIC2019/ISIC_2019_Training_GroundTruth.csv", "ISIC2019/ISIC_2019_Training_Metadata.csv",
        "ISIC2019/ISIC_2019_Training_Input.zip",
        "Fitzpatrick17k/fitzpatrick17k.csv", "Derm7pt/meta/meta.csv", "Derm7pt/meta/train_indexes.csv",
        "Derm7pt/meta/valid_indexes.csv", "Derm7pt/meta/test_indexes.csv", "demo_truth.csv", "demo_provenance.json",
    ]
    folders = ["Fitzpatrick17k/images", "Derm7pt/images"]
    return [str(root / f) for f in files], [str(root / f) for f in folders]

"""Public data sets, fetched once and written in the competition layout.

ucsd-covid-ct: https://github.com/UCSD-AI4H/COVID-CT (Yang et al. 2020). The repository publishes the
images as Images-processed/CT_{COVID,NonCOVID}.zip (one top folder per zip; file names with spaces, %,
parentheses, .png and .jpg) and the official patient-level split as Data-split/*/{train,val,test}CT_*.txt.
Official train + val become train/, official test becomes test/ (with its labels in test_labels.csv).
The patient ids of COVID-CT-MetaInfo.xlsx and NonCOVID-CT-MetaInfo.csv become groups.csv, so that no
validation split puts one patient on both sides.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from covid_sweep.core.errors import UserError

UCSD = "ucsd-covid-ct"
DATASETS = {UCSD: "UCSD COVID-CT (Yang et al. 2020): 746 chest-CT slices from papers, official split"}
REPO_URL = "https://github.com/UCSD-AI4H/COVID-CT"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/UCSD-AI4H/COVID-CT/master"
BASE_URL_ENV = "COVID_SWEEP_UCSD_BASE_URL"

# (folder inside Images-processed and name of its zip, Data-split folder, label)
CLASSES = (("CT_COVID", "COVID", 1), ("CT_NonCOVID", "NonCOVID", 0))
OFFICIAL_SPLITS = ("train", "val", "test")
OUT_SPLIT = {"train": "train", "val": "train", "test": "test"}
ZIP_FILES = tuple(f"Images-processed/{folder}.zip" for folder, _, _ in CLASSES)
SPLIT_FILES = tuple(f"Data-split/{d}/{s}CT_{d}.txt" for _, d, _ in CLASSES for s in OFFICIAL_SPLITS)
COVID_META = "COVID-CT-MetaInfo.xlsx"  # first sheet: `File name`, `Patient ID`
NONCOVID_META = "NonCOVID-CT-MetaInfo.csv"  # `image name`, `patient id`
META_FILES = (COVID_META, NONCOVID_META)
SOURCE_FILES = ZIP_FILES + SPLIT_FILES + META_FILES
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

CITATION = ('Xingyi Yang, Xuehai He, Jinyu Zhao, Yichen Zhang, Shanghang Zhang, Pengtao Xie. '
            '"COVID-CT-Dataset: A CT Scan Dataset about COVID-19." arXiv:2003.13865 (2020).')

MANUAL_HELP = (f"To fetch by hand, get the repository ({REPO_URL}: `git clone {REPO_URL}`, or download "
               f"Images-processed/CT_COVID.zip, Images-processed/CT_NonCOVID.zip, the Data-split folder, {COVID_META} "
               f"and {NONCOVID_META}) and run `covid-sweep fetch-data {UCSD} DEST --from-dir DIR`, where DIR is laid "
               "out like the repository (DIR/Images-processed/CT_COVID.zip, DIR/Images-processed/CT_NonCOVID.zip, "
               "DIR/Data-split/COVID/trainCT_COVID.txt ... DIR/Data-split/NonCOVID/testCT_NonCOVID.txt, "
               f"DIR/{COVID_META}, DIR/{NONCOVID_META}).")


class FetchError(UserError):
    """A data set could not be fetched or written; the message names the URL or file and what to do."""


@dataclass(frozen=True)
class Item:
    """One image of the source: where it is and where the official split puts it."""

    label: int
    source_file: str  # "<class folder>/<basename>", whatever the zip's own top folder is called
    official_split: str
    zip_path: Path
    member: str
    patient_id: str = ""  # "covid:<Patient ID>" / "noncovid:<patient id>"; "" where the meta has none

    @property
    def split(self) -> str:
        return OUT_SPLIT[self.official_split]


def say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # keeps a running progress bar intact

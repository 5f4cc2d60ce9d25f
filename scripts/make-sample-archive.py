#!/usr/bin/env python3
"""Write the demo imaging archive: one patient, one study, four series of
real images from pydicom's bundled test files, zipped deterministically.

Usage: make-sample-archive.py OUT.zip

The same pydicom version gives the same bytes on every run: UIDs derive
from fixed seeds, entries are sorted and stored with the date 1980-01-01 and
mode 0644. The patient is FERRY-0001, Müller^Jürgen, born 1970-01-31, the
patient that scripts/make-test-study.py writes to patient.json.
See docs/sample-data.md for the files' origin and licence.
"""

import io
import sys
import zipfile

try:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
except ImportError:
    sys.exit("pydicom is missing: install it with `pip install pydicom`")


# (series number, series description, pydicom test file)
SERIES = [
    (1, "CT axial (NEMA WG04 CT1, downsized)", "CT_small.dcm"),
    (2, "MR axial (NEMA WG04 MR1, downsized)", "MR_small.dcm"),
    (3, "Liver segmentation, one frame", "liver_1frame.dcm"),
    (4, "RT dose, one frame", "rtdose_1frame.dcm"),
]


def uid(*parts):
    """Return a UID under pydicom's root, derived from `parts` so every run
    gives the same UID."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def instance_bytes(series_number, description, source):
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "FERRY-0001"
    ds.PatientBirthDate = "19700131"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = uid("sample", "study")
    ds.StudyDate = "20240315"
    ds.StudyDescription = "Ferry sample study"
    ds.AccessionNumber = "FERRY-SAMPLE-1"
    ds.SeriesInstanceUID = uid("sample", "series", series_number)
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SOPInstanceUID = uid("sample", "instance", series_number, 1)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    entries = []
    for series_number, description, source in SERIES:
        name = f"SAMPLE/SE{series_number:02d}/IM0001.dcm"
        entries.append((name, instance_bytes(series_number, description, source)))
    entries.sort()

    with zipfile.ZipFile(sys.argv[1], "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            archive.writestr(info, data)


if __name__ == "__main__":
    main()

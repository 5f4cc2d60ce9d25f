#!/usr/bin/env python3
"""Write imaging test studies built from pydicom's bundled sample files.

Usage: make-test-study.py OUT_DIR [--only NAME ...] [--ct-instances N] [--bench N]
                         [--large-mib N]

Each layout is a folder under OUT_DIR:
  ct-study/        one patient, one CT study, three series, N instances (default 300)
                   copied from CT_small.dcm with new UIDs and instance numbers
  disc/            a small CT study written as a DICOM file-set with a DICOMDIR
  mixed-patients/  a CT study of patient FERRY-0001 and an MR study of FERRY-0002
  charsets/        non-ASCII patient and file names: ISO_IR 100, ISO_IR 192,
                   GB18030, and ISO 2022 code extensions for Japanese (IR 87,
                   also after IR 13), Korean (IR 149) and simplified Chinese
                   (IR 58)
  invalid/         two valid instances beside a zero-byte file, a .dcm without
                   preamble, a PDF, a text file, a private SOP class, an instance
                   without Series Instance UID, and a duplicate SOP Instance UID
  wrong-patient/   a CT study whose Patient ID is FERRY-9999
  bench/           only with --bench N: N instances for the scan benchmark
  large/           only with --large-mib N: a CT study of about N MiB in four
                   series of 2048x2048 instances (8 MiB each) whose pixel data
                   is pseudo-random, so it neither compresses nor repeats
and OUT_DIR/patient.json is the FHIR R4 Patient the studies are checked against.
"""

import argparse
import copy
import json
import os
import random
import shutil
import sys

try:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
except ImportError:
    sys.exit("pydicom is missing: install it with `pip install pydicom`")


PATIENT = {"id": "FERRY-0001", "name": "Müller^Jürgen", "birth_date": "19700131", "sex": "M"}
OTHER_PATIENT = {"id": "FERRY-0002", "name": "Schmidt^Anna", "birth_date": "19850612", "sex": "F"}

FHIR_PATIENT = {
    "resourceType": "Patient",
    "id": "pat-001",
    "identifier": [{"system": "urn:ferry:mrn", "value": "FERRY-0001"}],
    "name": [{"family": "Müller", "given": ["Jürgen"]}],
    "gender": "male",
    "birthDate": "1970-01-31",
}


def uid(*parts):
    """Return a UID under pydicom's root, derived from `parts` so every run
    gives the same UID."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def template(name):
    return pydicom.dcmread(get_testdata_file(name))


def set_patient(ds, patient, charset="ISO_IR 192"):
    ds.SpecificCharacterSet = charset
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]


def make_instance(base, patient, study_key, series_number, instance_number, modality,
                  series_description, study_description="CT chest", charset="ISO_IR 192"):
    """Return a copy of `base` re-identified as one instance of a study."""
    ds = copy.deepcopy(base)
    set_patient(ds, patient, charset)
    ds.StudyInstanceUID = uid("study", study_key)
    ds.SeriesInstanceUID = uid("series", study_key, series_number)
    ds.SOPInstanceUID = uid("instance", study_key, series_number, instance_number)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = "20240315"
    ds.StudyDescription = study_description
    ds.AccessionNumber = "ACC-" + str(study_key)[:12]
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    return ds


def write(ds, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_ct_study(out, count, patient=PATIENT, study_key="ct", folder="ct-study"):
    base = template("CT_small.dcm")
    series = [(1, "Topogram"), (2, "Chest 5mm"), (3, "Chest 1mm")]
    for n in range(count):
        series_number, description = series[n % len(series)]
        ds = make_instance(base, patient, study_key, series_number, n + 1, "CT", description)
        write(ds, os.path.join(out, folder, f"series{series_number}", f"IM{n + 1:05d}.dcm"))


def make_disc(out):
    from pydicom.fileset import FileSet

    base = template("CT_small.dcm")
    staging = os.path.join(out, ".disc-staging")
    fs = FileSet()
    for n in range(6):
        ds = make_instance(base, PATIENT, "disc", 1 + n % 2, n + 1, "CT", "Disc series")
        path = os.path.join(staging, f"{n}.dcm")
        write(ds, path)
        fs.add(path)
    fs.write(os.path.join(out, "disc"))
    shutil.rmtree(staging)


def make_mixed(out):
    make_ct_study(out, 12, PATIENT, "mixed-ct", "mixed-patients/ct")
    base = template("MR_small.dcm")
    for n in range(8):
        ds = make_instance(base, OTHER_PATIENT, "mixed-mr", 1, n + 1, "MR", "T1 axial",
                           study_description="MR head")
        write(ds, os.path.join(out, "mixed-patients", "mr", f"MR{n + 1:03d}.dcm"))


# Person names of PS3.5 sections H.3.2, I.2, K.2 and J.3 as the standard
# encodes them. pydicom 3.0.2 drops
# the escape sequences of ISO 2022 IR 58 and re-encodes byte values, so
# write_with_raw_name() puts these bytes into the written file.
KOREAN_ANNEX_I = (b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7="
                  b"\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf")
JAPANESE_ANNEX_H_KATAKANA = (b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J="
                             b"\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J")
CHINESE_ANNEX_K = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
CHINESE_ANNEX_J_GB18030 = b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="


def make_charsets(out):
    base = template("CT_small.dcm")
    cases = [
        ("ISO_IR 100", {"id": "CS-100", "name": "Müller^Jürgen", "birth_date": "19700131", "sex": "M"},
         "latin1/Müller_Jürgen.dcm"),
        ("ISO_IR 192", {"id": "CS-192", "name": "Øster^Zoë", "birth_date": "19900101", "sex": "F"},
         "utf8/Øster-Zoë.dcm"),
        (["", "ISO 2022 IR 87"], {"id": "CS-87", "name": "Yamada^Tarou=山田^太郎=やまだ^たろう",
                                  "birth_date": "19600505", "sex": "M"},
         "日本語/山田太郎.dcm"),
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], {"id": "CS-13", "name": JAPANESE_ANNEX_H_KATAKANA,
                                                "birth_date": "19600505", "sex": "M"},
         "日本語/ヤマダタロウ.dcm"),
        (["", "ISO 2022 IR 149"], {"id": "CS-149", "name": KOREAN_ANNEX_I,
                                   "birth_date": "19650707", "sex": "M"},
         "한국어/홍길동.dcm"),
        (["", "ISO 2022 IR 58"], {"id": "CS-58", "name": CHINESE_ANNEX_K,
                                  "birth_date": "19750808", "sex": "M"},
         "中文/张小东.dcm"),
        ("GB18030", {"id": "CS-GB18030", "name": CHINESE_ANNEX_J_GB18030,
                     "birth_date": "19800909", "sex": "M"},
         "中文/王小东.dcm"),
        ("ISO_IR 192", {"id": "CS-192-ZH", "name": "Wang^XiaoDong=王^小東=".encode("utf-8"),
                        "birth_date": "19800909", "sex": "M"},
         "utf8/王小東.dcm"),
    ]
    for index, (charset, patient, path) in enumerate(cases):
        name = patient["name"]
        if isinstance(name, bytes):
            patient = dict(patient, name="")
        ds = make_instance(base, patient, f"charset-{index}", 1, 1, "CT", "Charset")
        ds.SpecificCharacterSet = charset
        target = os.path.join(out, "charsets", path)
        if isinstance(name, bytes):
            write_with_raw_name(ds, target, name)
        else:
            write(ds, target)


def write_with_raw_name(ds, path, name):
    """Write `ds` with Patient's Name set to the bytes `name`, padded with a
    space to an even length as PS3.5 section 6.2 requires."""
    padded = name + b" " * (len(name) % 2)
    placeholder = (b"RAW-PATIENT-NAME" + b"X" * len(padded))[:len(padded)]
    ds.PatientName = placeholder.decode("ascii")
    write(ds, path)
    with open(path, "rb") as f:
        data = f.read()
    if data.count(placeholder) != 1:
        sys.exit(f"{path}: the Patient's Name placeholder is not unique")
    with open(path, "wb") as f:
        f.write(data.replace(placeholder, padded))


def make_invalid(out):
    folder = os.path.join(out, "invalid")
    base = template("CT_small.dcm")
    for n in range(2):
        ds = make_instance(base, PATIENT, "invalid", 1, n + 1, "CT", "Valid")
        write(ds, os.path.join(folder, f"valid{n + 1}.dcm"))

    # The same SOP Instance UID as valid1.dcm, under another name.
    shutil.copyfile(os.path.join(folder, "valid1.dcm"), os.path.join(folder, "copy-of-valid1.dcm"))

    open(os.path.join(folder, "empty.dcm"), "wb").close()

    # A Part 10 file with its 128-byte preamble and DICM prefix cut off.
    with open(os.path.join(folder, "valid2.dcm"), "rb") as source:
        raw = source.read()[132:]
    with open(os.path.join(folder, "no-preamble.dcm"), "wb") as target:
        target.write(raw)

    with open(os.path.join(folder, "report.pdf"), "wb") as pdf:
        pdf.write(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")

    with open(os.path.join(folder, "notes.txt"), "w", encoding="utf-8") as notes:
        notes.write("Scanned at the front desk.\n")

    ds = make_instance(base, PATIENT, "invalid", 2, 1, "CT", "Private")
    ds.SOPClassUID = "1.3.12.2.1107.5.9.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    write(ds, os.path.join(folder, "private-class.dcm"))

    ds = make_instance(base, PATIENT, "invalid", 3, 1, "CT", "No series")
    del ds.SeriesInstanceUID
    write(ds, os.path.join(folder, "no-series-uid.dcm"))


def make_wrong_patient(out):
    wrong = dict(PATIENT, id="FERRY-9999")
    make_ct_study(out, 9, wrong, "wrong", "wrong-patient")


def make_bench(out, count):
    base = template("CT_small.dcm")
    for n in range(count):
        series_number = 1 + n // 500
        ds = make_instance(base, PATIENT, "bench", series_number, n + 1, "CT", f"Bench {series_number}")
        write(ds, os.path.join(out, "bench", f"series{series_number:03d}", f"IM{n + 1:06d}.dcm"))


LARGE_SIDE = 2048
LARGE_PIXEL_BYTES = LARGE_SIDE * LARGE_SIDE * 2


def make_large(out, mib):
    base = template("CT_small.dcm")
    count = max(1, mib * 1024 * 1024 // LARGE_PIXEL_BYTES)
    for n in range(count):
        series_number = 1 + n % 4
        ds = make_instance(base, PATIENT, "large", series_number, n + 1, "CT", f"Large {series_number}")
        ds.Rows = LARGE_SIDE
        ds.Columns = LARGE_SIDE
        ds.PixelData = random.Random(n).randbytes(LARGE_PIXEL_BYTES)
        write(ds, os.path.join(out, "large", f"series{series_number}", f"IM{n + 1:05d}.dcm"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--only", action="append", default=[],
                        help="layout to write (repeatable); default: all except bench")
    parser.add_argument("--ct-instances", type=int, default=300, help="instances in ct-study")
    parser.add_argument("--bench", type=int, default=0, help="instances in bench/ (0: none)")
    parser.add_argument("--large-mib", type=int, default=0,
                        help="approximate size of large/ in MiB (0: none)")
    args = parser.parse_args()

    layouts = {
        "ct-study": lambda out: make_ct_study(out, args.ct_instances),
        "disc": make_disc,
        "mixed-patients": make_mixed,
        "charsets": make_charsets,
        "invalid": make_invalid,
        "wrong-patient": make_wrong_patient,
    }
    unknown = [name for name in args.only if name not in layouts]
    if unknown:
        parser.error(f"unknown layout {unknown[0]}; choose from {', '.join(layouts)}")
    chosen = args.only or ([] if args.bench or args.large_mib else list(layouts))

    os.makedirs(args.out_dir, exist_ok=True)
    for name in chosen:
        layouts[name](args.out_dir)
    if args.bench:
        make_bench(args.out_dir, args.bench)
    if args.large_mib:
        make_large(args.out_dir, args.large_mib)
    with open(os.path.join(args.out_dir, "patient.json"), "w", encoding="utf-8") as f:
        json.dump(FHIR_PATIENT, f, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    main()

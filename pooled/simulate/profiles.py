"""Upload formats of simulated centres: what each delivers and how it writes it.

A :class:`Profile` describes one centre's habits: file format, language of the headers, where
the header row is, how dates, numbers, yes/no and receptor results are written, which
missing-value code it uses, which fields it delivers at all, whether it reports CTC per 15 ml,
and whether it delivers endpoint durations instead of dates. :mod:`pooled.simulate.uploads`
writes the files and the matching mapping YAML from it; :mod:`pooled.simulate.cohort` needs
it to know which fields a centre records (the subtype follows from the recorded values).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

DateStyle = Literal["datetime", "excel_serial", "text_dmy", "spss", "iso_text"]


@dataclass(frozen=True, slots=True)
class Profile:
    """One centre's upload habits (see the module docstring)."""

    name: str
    extension: Literal["xlsx", "csv", "sav"]
    language: Literal["de", "en", "spss"]
    header_row: int
    title: tuple[str, ...]
    date_style: DateStyle
    delimiter: str
    decimal: str
    encoding: str
    missing_token: str | float | None  # written for a missing cell
    missing_codes: tuple[str, ...]  # declared in the mapping
    yes_no: tuple[str | float, str | float]
    receptor: tuple[str | float, str | float]
    delivers: Literal["dates", "durations"]
    duration_unit: Literal["days", "months"]
    tumour_size_unit: Literal["mm", "cm"]
    ctc_volume_ml: float  # the volume the centre counts CTC in (15 = per 15 ml)
    last_contact_if_dead: Literal["death", "blank"]
    percents: bool  # delivers er_percent / pr_percent and her2_ihc / her2_ish
    ki67_observed: float  # share of patients with a recorded Ki-67 (0 = not delivered)
    delivers_subtype: bool
    os_flag_with_dates: bool  # delivers os_event beside the death date
    sheet: str = ""
    samples_sheet: str = ""
    samples_days: bool = False  # serial samples as days from baseline instead of dates


PROFILE_TABLE: MappingProxyType[str, Profile] = MappingProxyType(
    {
        "xlsx_german": Profile(
            name="xlsx_german",
            extension="xlsx",
            language="de",
            header_row=4,
            title=("Universitätsfrauenklinik: Export Tumordokumentation", "Stand der Daten"),
            date_style="datetime",
            delimiter="",
            decimal=".",
            encoding="",
            missing_token="unbekannt",
            missing_codes=("", "unbekannt"),
            yes_no=("ja", "nein"),
            receptor=("pos", "neg"),
            delivers="dates",
            duration_unit="months",
            tumour_size_unit="mm",
            ctc_volume_ml=7.5,
            last_contact_if_dead="death",
            percents=True,
            ki67_observed=0.75,
            delivers_subtype=False,
            os_flag_with_dates=False,
            sheet="Patienten",
            samples_sheet="Proben",
        ),
        "csv_latin1": Profile(
            name="csv_latin1",
            extension="csv",
            language="de",
            header_row=1,
            title=(),
            date_style="text_dmy",
            delimiter=";",
            decimal=",",
            encoding="latin-1",
            missing_token="n.a.",
            missing_codes=("", "n.a."),
            yes_no=("1", "0"),
            receptor=("+", "-"),
            delivers="dates",
            duration_unit="months",
            tumour_size_unit="cm",
            ctc_volume_ml=15.0,
            last_contact_if_dead="blank",
            percents=False,
            ki67_observed=0.0,
            delivers_subtype=False,
            os_flag_with_dates=False,
        ),
        "sav_spss": Profile(
            name="sav_spss",
            extension="sav",
            language="spss",
            header_row=0,
            title=(),
            date_style="spss",
            delimiter="",
            decimal=".",
            encoding="",
            missing_token=-9.0,
            missing_codes=("-9",),
            yes_no=(1.0, 0.0),
            receptor=(1.0, 0.0),
            delivers="dates",
            duration_unit="months",
            tumour_size_unit="mm",
            ctc_volume_ml=7.5,
            last_contact_if_dead="blank",
            percents=False,
            ki67_observed=0.6,
            delivers_subtype=False,
            os_flag_with_dates=False,
        ),
        "xlsx_serial": Profile(
            name="xlsx_serial",
            extension="xlsx",
            language="en",
            header_row=1,
            title=(),
            date_style="excel_serial",
            delimiter="",
            decimal=".",
            encoding="",
            missing_token=999,
            missing_codes=("", "999"),
            yes_no=("yes", "no"),
            receptor=("positive", "negative"),
            delivers="dates",
            duration_unit="months",
            tumour_size_unit="mm",
            ctc_volume_ml=7.5,
            last_contact_if_dead="death",
            percents=True,
            ki67_observed=1.0,
            delivers_subtype=True,
            os_flag_with_dates=True,
            sheet="data",
            samples_sheet="samples",
            samples_days=True,
        ),
        "csv_durations": Profile(
            name="csv_durations",
            extension="csv",
            language="en",
            header_row=1,
            title=(),
            date_style="iso_text",
            delimiter=",",
            decimal=".",
            encoding="utf-8",
            missing_token="",
            missing_codes=("",),
            yes_no=("Y", "N"),
            receptor=("pos", "neg"),
            delivers="durations",
            duration_unit="days",
            tumour_size_unit="mm",
            ctc_volume_ml=7.5,
            last_contact_if_dead="death",
            percents=False,
            ki67_observed=0.7,
            delivers_subtype=False,
            os_flag_with_dates=False,
        ),
    }
)

# Headers per language; SPSS variable names are short and without spaces.
HEADERS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        "de": MappingProxyType(
            {
                "patient_id": "Pat-Nr",
                "age": "Alter",
                "menopausal_status": "Menopausenstatus",
                "tumour_size_mm": "Tumorgröße",
                "positive_nodes": "LK positiv",
                "grade": "Grading",
                "er_status": "ER",
                "pr_status": "PR",
                "er_percent": "ER (%)",
                "pr_percent": "PR (%)",
                "her2_ihc": "HER2 IHC",
                "her2_ish": "HER2 ISH",
                "her2_status": "HER2-Status",
                "ki67_percent": "Ki-67 (%)",
                "subtype": "Subtyp",
                "dtc_count": "DTC",
                "ctc_count": "CTC",
                "ctc_blood_volume_ml": "Blutvolumen (ml)",
                "chemotherapy": "Chemotherapie",
                "endocrine_therapy": "Endokrine Therapie",
                "anti_her2_therapy": "Anti-HER2",
                "bisphosphonate": "Bisphosphonat",
                "line_of_therapy": "Therapielinie",
                "treatment_arm": "Studienarm",
                "diagnosis_date": "Erstdiagnose",
                "surgery_date": "OP-Datum",
                "sample_date": "Entnahmedatum",
                "last_contact_date": "Letzter Kontakt",
                "recurrence_date": "Rezidiv",
                "distant_recurrence_date": "Fernmetastase",
                "progression_date": "Progress",
                "treatment_failure_date": "Therapieversagen",
                "death_date": "Todesdatum",
                "death_cause": "Todesursache",
                "os_event": "verstorben",
                "timepoint": "Zeitpunkt",
                "days_from_baseline": "Tage seit Baseline",
            }
        ),
        "en": MappingProxyType(
            {
                "patient_id": "patient",
                "age": "age_years",
                "menopausal_status": "menopause",
                "tumour_size_mm": "tumour size (mm)",
                "positive_nodes": "pos_nodes",
                "grade": "grade",
                "er_status": "ER status",
                "pr_status": "PgR status",
                "er_percent": "ER %",
                "pr_percent": "PgR %",
                "her2_ihc": "HER2 IHC score",
                "her2_ish": "HER2 FISH",
                "her2_status": "HER2 status",
                "ki67_percent": "Ki67",
                "subtype": "molecular subtype",
                "dtc_count": "DTC count",
                "ctc_count": "CTC count",
                "ctc_blood_volume_ml": "blood volume",
                "chemotherapy": "chemo",
                "endocrine_therapy": "endocrine",
                "anti_her2_therapy": "trastuzumab",
                "bisphosphonate": "bisphosphonates",
                "line_of_therapy": "line",
                "treatment_arm": "arm",
                "diagnosis_date": "date of diagnosis",
                "surgery_date": "date of surgery",
                "sample_date": "date of sampling",
                "last_contact_date": "last follow-up",
                "recurrence_date": "date of recurrence",
                "distant_recurrence_date": "date of distant metastasis",
                "progression_date": "date of progression",
                "treatment_failure_date": "date of treatment failure",
                "death_date": "date of death",
                "death_cause": "cause of death",
                "os_event": "vital status",
                "os_months": "OS",
                "os_event_d": "OS event",
                "bcss_months": "BCSS",
                "bcss_event": "BCSS event",
                "dfs_months": "DFS",
                "dfs_event": "DFS event",
                "ddfs_months": "DDFS",
                "ddfs_event": "DDFS event",
                "pfs_months": "PFS",
                "pfs_event": "PFS event",
                "ttf_months": "TTF",
                "ttf_event": "TTF event",
                "timepoint": "timepoint",
                "days_from_baseline": "day",
            }
        ),
        "spss": MappingProxyType(
            {
                "patient_id": "PATID",
                "age": "ALTER",
                "menopausal_status": "MENO",
                "tumour_size_mm": "TGROESSE",
                "positive_nodes": "NPOS",
                "grade": "GRAD",
                "er_status": "ER",
                "pr_status": "PR",
                "her2_ihc": "HER2IHC",
                "her2_ish": "HER2ISH",
                "her2_status": "HER2",
                "ki67_percent": "KI67",
                "subtype": "SUBTYP",
                "dtc_count": "DTC",
                "ctc_count": "CTC",
                "ctc_blood_volume_ml": "BLUTVOL",
                "chemotherapy": "CHEMO",
                "endocrine_therapy": "ENDO",
                "anti_her2_therapy": "ANTIHER2",
                "bisphosphonate": "BISPHOS",
                "line_of_therapy": "LINIE",
                "treatment_arm": "ARM",
                "diagnosis_date": "DIAGDAT",
                "surgery_date": "OPDAT",
                "sample_date": "PROBDAT",
                "last_contact_date": "LKDAT",
                "recurrence_date": "REZDAT",
                "distant_recurrence_date": "METDAT",
                "progression_date": "PROGDAT",
                "treatment_failure_date": "TFDAT",
                "death_date": "TODDAT",
                "death_cause": "TODURS",
            }
        ),
    }
)


def header(profile: Profile, field: str) -> str:
    """The header a centre with ``profile`` writes for schema field ``field``."""
    if profile.delivers == "durations" and field == "os_event":
        return HEADERS["en"]["os_event_d"]
    return HEADERS[profile.language][field]


def get_profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``."""
    return PROFILE_TABLE[name]

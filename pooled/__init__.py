"""pooled: individual-patient-data pooled meta-analysis of CTC/DTC in breast cancer."""

__version__ = "0.1.0"

"""Evaluation, statistics, tables, figures and reports for nnU-Net results."""

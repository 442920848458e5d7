"""HTML reports with plots of data values."""

from dataworth.report.html import write_report

__all__ = ["write_report"]

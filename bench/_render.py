"""
The results files' text: markdown tables and the formats of their
cells, a section's markdown file, and the numbers as JSON keeps them.
Nothing here measures.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional, Sequence

__all__ = ["fmt_ci", "fmt_ms", "fmt_ratio", "json_safe", "markdown_file", "markdown_table"]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """
    @return: a GitHub markdown table; the first column is left-aligned,
        the others right-aligned.
    """
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def markdown_file(header: str, paragraphs: Sequence[str]) -> str:
    """
    @param header: the line that says when and where the numbers were
        measured (L{bench._common.machine_line}).
    @param paragraphs: a section's headings, notes and tables.
    @return: the text of the section's results file (C{NAME.md}).
    """
    return header + "\n\n" + "\n\n".join(paragraphs) + "\n"


def fmt_ratio(s: Dict[str, float]) -> str:
    """
    @param s: a L{bench._common.spread}.
    @return: C{"0.99 (0.97–1.01)"}: the median and the min–max.
    """
    return "%.3f (%.3f–%.3f)" % (s["median"], s["min"], s["max"])


def fmt_ci(s: Dict[str, float], bold: bool = False) -> str:
    """
    @param s: a L{bench._common.spread}.
    @param bold: whether to set the median in bold.
    @return: C{"0.990 (0.985–0.995)"}: the median and its 95% confidence
        interval.
    """
    median = "**%.3f**" % (s["median"],) if bold else "%.3f" % (s["median"],)
    return "%s (%.3f–%.3f)" % (median, s["ci_low"], s["ci_high"])


def fmt_ms(seconds: Optional[float]) -> str:
    """
    @return: C{seconds} in milliseconds (one decimal below 100 ms), or
        C{"—"} for L{None} or NaN.
    """
    if seconds is None or seconds != seconds:
        return "—"
    return "%.0f ms" % (seconds * 1000,) if seconds >= 0.1 else "%.1f ms" % (seconds * 1000,)


def json_safe(value: Any) -> Any:
    """
    @return: C{value} as the JSON results keep it: NaN and infinities
        become L{None} (JSON has neither), floats are rounded to six
        significant digits (to keep the files small), keys are strings
        and tuples are lists.
    """
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float("%.6g" % value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value

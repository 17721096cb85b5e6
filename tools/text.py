"""Text output and batches: markdown tables, padded id rows."""
import math

import torch


def markdown_table(table, formats=None, float_format="{:.4f}"):
    """A pandas DataFrame as a markdown table: `formats` maps a column to a format string,
    other floats take float_format, None and NaN are left blank."""
    formats, columns = formats or {}, list(table.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("")
            else:
                cells.append(formats.get(c, float_format if isinstance(v, float) else "{}").format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pad_rows(rows, value, left=False, length=None):
    """Lists of ids -> one (len(rows), length or the longest) int64 tensor, each row padded with
    `value` on the right (or on the left: generation's prompts end where decoding starts)."""
    length = length or max(map(len, rows))
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for r, ids in enumerate(rows):
        if len(ids):
            out[r, slice(length - len(ids), None) if left else slice(0, len(ids))] = torch.as_tensor(ids)
    return out

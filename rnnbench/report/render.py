"""Rendering the sections: report.md (figures as files) and one self-contained report.html."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def render_markdown(title: str, sections, out_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        if sec.absent:  # one line, no heading: what is not there and why
            lines += [f"**{sec.title}**: {sec.absent}.", ""]
            continue
        lines += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if block[0] == "text":
                lines += [block[1], ""]
            elif block[0] == "table":
                cells = block[1].apply(lambda col: col.str.replace("|", r"\|", regex=False))
                lines += [cells.to_markdown(index=False), ""]
            else:
                lines += [f"![{block[2]}]({block[1].relative_to(out_dir).as_posix()})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0;text-align:left}figure{margin:1em 0}figcaption{color:#555;font-size:13px}
figure img{width:100%;height:auto;max-height:92vh;object-fit:contain;object-position:left}
p.absent{color:#555;margin:.4em 0}"""  # figures at the page's width, a tall one within the window


def render_html(title: str, sections) -> str:
    """One file: figures embedded as base64 PNG, tables as HTML."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        if sec.absent:
            body.append(f'<p class="absent"><b>{html.escape(sec.title)}</b>: {html.escape(sec.absent)}.</p>')
            continue
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if block[0] == "text":
                body.append(f"<p>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                body.append(block[1].to_html(index=False, border=0))
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

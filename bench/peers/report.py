"""bench.peers' results as Markdown: one table, the machine, the notes and every single run, written
into bench/RESULTS.md between two markers (the text around them is written by hand)."""
from __future__ import annotations

import time
from pathlib import Path

BEGIN = "<!-- bench.peers:begin (written by `python -m bench.peers`; edit outside the markers) -->"
END = "<!-- bench.peers:end -->"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(result: dict) -> str:
    lines = ["| job | peer | `vlmdata` (median, s) | peer (median, s) | vlmdata / peer | goal | met |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in result["rows"]:
        if r["rate"]:
            ours = f"{r['rate'] / r['ours_s']:,.0f} img/s ({_s(r['ours_s'])} s)" if r["ours_s"] else "-"
            peer = f"{r['rate'] / r['peer_s']:,.0f} img/s ({_s(r['peer_s'])} s)" if r["peer_s"] else "-"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x images/s"
        else:
            ours, peer = _s(r["ours_s"]), _s(r["peer_s"])
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        met = {True: "yes", False: "**no**", None: "?"}[r["met"]]
        if r.get("out_of_reach"):  # (results.json of runs before it have no such key)
            met += f" ({r['out_of_reach']})"
        cells = [r["job"], r["peer"], ours, peer, ratio, r["goal"], met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")  # (a pipe in a cell)
    return "\n".join(lines)


def section(result: dict) -> str:
    m = result["machine"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result["started"]))
    out = [BEGIN, "",
           f"Run of {when}, {result['seconds']} s, `{result['command']}` ({result['repeat']} runs per tool, "
           f"alternating; the rows of a few seconds, all but the URL list and the blend: at least 5).", "",
           table(result), ""]
    out.append("Machine: " + "; ".join(f"{k}: {v}" for k, v in m.items()) + ".")
    out.append("")
    for n in result["notes"]:
        out.append(f"- {n}")
    out += ["", "Every run (seconds; the 1-minute load average when it started; CPU seconds, user + system, of "
                "the command and the processes it waited for, the server's not included; memory the VM handed "
                "back to its host during the run, where any: timing.settle says why it matters):", ""]
    for key, runs in result["runs"].items():
        by_tool: dict[str, list[str]] = {}
        for r in runs:
            cpu = f"; cpu {r['cpu_user']:.2f} + {r['cpu_sys']:.2f}" if "cpu_user" in r else ""
            rep = f"; reported {r['reported_mib']:,.0f} MiB" if r.get("reported_mib") else ""
            cell = f"{r['seconds']:.2f} (load {r['load1']:.1f}{cpu}{rep})" + ("" if r["rc"] == 0 else f" exit {r['rc']}")
            by_tool.setdefault(r["tool"], []).append(cell)
        for tool, cells in by_tool.items():
            out.append(f"- {key} / {tool}: " + ", ".join(cells))
    out += ["", END]
    return "\n".join(out)


def write_results_md(path: Path, result: dict) -> None:
    text = path.read_text()
    block = section(result)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:  # first run: a section of its own right after the file's introduction
        intro, sep, rest = text.partition("\n## ")
        text = intro + "\n## Whole commands beside the tools users would pick (`python -m bench.peers`)\n\n" + \
            block + "\n\n" + sep.lstrip("\n") + rest if sep else text + "\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)

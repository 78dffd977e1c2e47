"""Human-readable summaries of a blend (its blend.json) and of a completeness report."""
from __future__ import annotations

from typing import Any

FOLDER_LINES = 30  # folders shown in the text report (all of them are in --json)


def _source_table(counts: dict[str, dict[str, Any]], keep_label: str) -> list[str]:
    lines = [f"  {'source':<28} {'read':>10} {'sampled':>10} {keep_label:>10} {'weight':>7} {'rows':>10} {'dropped':>9} "
             f"{'images':>9} {'missing':>8} {'corrupt':>8}"]
    for name, c in counts.items():
        img = c["images"]
        lines.append(f"  {name:<28} {c['read']:>10,} {c['sampled']:>10,} {c['kept']:>10,} {c['weight']:>7g} "
                     f"{c['rows']:>10,} {sum(c['dropped'].values()):>9,} {img['needed']:>9,} {img['missing']:>8,} "
                     f"{img['corrupt']:>8,}")
    for name, c in counts.items():
        for reason, n in c["dropped"].items():
            lines.append(f"    {name}: dropped {n:,} ({reason})")
        for fix, n in c["fixed"].items():
            lines.append(f"    {name}: fixed {n:,} ({fix})")
        if c.get("ids_renamed"):
            lines.append(f"    {name}: {c['ids_renamed']:,} ids made unique as '{name}:<id>'")
        if c.get("kept_with_missing_or_corrupt_images"):
            lines.append(f"    {name}: kept {c['kept_with_missing_or_corrupt_images']:,} records with missing or "
                         f"corrupt images (--missing keep)")
    return lines


def other_extension_lines(found: dict[str, Any]) -> list[str]:
    """Missing images whose file is there under another extension (OCR-VQA's loadDataset.py kept .gif and
    .png where the records name .jpg): not dead URLs, and `vlmdata normalize` makes the names."""
    n = found.get("count", 0)
    if not n:
        return []
    lines = ["", f"  {n:,} missing image(s) are there under another extension, e.g.:"]
    lines += [f"    {e['path']}: {e['there']} is there" for e in found.get("examples", [])[:5]]
    return lines + ["    -> `vlmdata normalize DATASET FOLDER` converts them to the .jpg the records name (docs/place.md)"]


def render_blend(meta: dict[str, Any], out: str) -> str:
    t = meta["totals"]
    lines = [f"{meta['recipe']['name']}: {t['rows']:,} records ({t['text_only']:,} text-only) -> {out}",
             f"  image root: {meta['image_root']}  ({meta['image_root_origin']})", ""]
    lines += _source_table(meta["counts"], "kept")
    under = t.get("images_missing_under_other_extension", 0)
    if under:
        lines.append(f"\n  {under:,} missing image(s) are there under another extension (.gif / .png for a .jpg): "
                     f"`vlmdata normalize DATASET FOLDER` converts them (docs/place.md)"
                     + (f"; their records are in {out}/{meta['dropped_file']}" if meta.get("dropped_file") else ""))
    if meta.get("dropped_file"):
        lines.append(f"\n  every dropped record (id, file, index, line, reason): {out}/{meta['dropped_file']}")
    lines.append(f"\n  load it: datasets.load_from_disk({out!r}); images relative to {meta['image_root']}")
    return "\n".join(lines)


def render_report(rep: dict[str, Any]) -> str:
    t = rep["totals"]
    counts = {s["name"]: {**s, "kept": s["kept"]} for s in rep["sources"]}
    lines = [f"{rep['recipe']}: image root {rep['image_root']}  ({rep['image_root_origin']})",
             f"  records: {t['read']:,} read, {t['sampled']:,} sampled, {t['would_keep']:,} would be kept, "
             f"{t['would_drop']:,} would be dropped",
             f"  images the mix needs: {t['images_needed']:,} — present {t['images_present']:,}, "
             f"missing {t['images_missing']:,}, corrupt {t['images_corrupt']:,}"
             + ("" if rep["options"]["deep"] else "  (corrupt: 0-byte files; --deep decodes every image)"), ""]
    lines += _source_table(counts, "keep")
    folders = sorted(rep["folders"], key=lambda f: (-(f["missing"] + f["corrupt"]), f["folder"]))
    lines += ["", f"  {'folder':<44} {'needed':>9} {'present':>9} {'missing':>9} {'corrupt':>9}"]
    for f in folders[:FOLDER_LINES]:
        lines.append(f"  {f['folder']:<44} {f['needed']:>9,} {f['present']:>9,} {f['missing']:>9,} {f['corrupt']:>9,}")
    if len(folders) > FOLDER_LINES:
        lines.append(f"  ... {len(folders) - FOLDER_LINES} more folders (all of them with --json)")
    if rep["missing_examples"]:
        lines += ["", "  missing, e.g.:"] + [f"    {p}" for p in rep["missing_examples"][:10]]
    lines += other_extension_lines(rep.get("missing_under_other_extension") or {})
    if rep["corrupt_examples"]:
        lines += ["", "  corrupt, e.g.:"] + [f"    {p}" for p in rep["corrupt_examples"][:10]]
    shown = [(s["name"], d) for s in rep["sources"] for d in s["dropped_examples"] if d["reason"] not in
             ("missing image", "corrupt image")][:10]
    if shown:
        lines += ["", "  bad records, e.g.:"]
        for name, d in shown:
            where = f"record {d['index']}" + (f", line {d['line']}" if d["line"] else "")
            lines.append(f"    {name} {where} (id {d['id']!r}): {d['reason']}: {d['detail']}")
    stop = rep.get("blend_would_stop")
    if stop:
        lines += ["", "  `vlmdata blend` would stop here: " + stop["message"].replace("\n", "\n  "),
                  "    -> " + stop["hint"].replace("\n     ", "\n       ")]
    return "\n".join(lines)

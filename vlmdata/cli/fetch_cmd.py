"""`vlmdata fetch`: download, verify and place datasets, then build a layout's view."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from vlmdata.cli.echo import echo
from vlmdata.cli.params import Argument, Option
from vlmdata.cli.plan_cmd import (ONLY_REFERENCED_HELP, REFETCH_HELP, UPDATE_CHECK, UPDATE_HELP, show_plan,
                                  wanted_names)
from vlmdata.cli.selection import RECIPE_HELP, select
from vlmdata.cli.settings import Settings
from vlmdata.errors import Interrupted, OperationError, UserError, VlmdataError
from vlmdata.fetch.outcome import FetchOptions, FetchReport, present_outcome, repo_files_said
from vlmdata.net.urls import check_base
from vlmdata.units import human_bytes

if TYPE_CHECKING:
    from vlmdata.manifest import FileSpec
    from vlmdata.plan import Plan
    from vlmdata.state import Root

DEFAULTS = FetchOptions()  # (the options' defaults: one place, the class)


def fetch_cmd(
    names: Optional[List[str]] = Argument(None, help="Datasets (NAME: its default files) or single files (NAME:FILE)."),
    layout: Optional[str] = Option(None, "--layout", "-l", help="Then build this layout's view (links, no copies); "
                                                                "alone: fetch everything it needs first."),
    recipe: Optional[str] = Option(None, "--recipe", help=RECIPE_HELP),
    jobs: int = Option(DEFAULTS.jobs, "--jobs", "-j", min=1, max=64, help="Files downloaded at once."),
    connections: Optional[int] = Option(None, "--connections", "-x", min=1, max=32, show_default=False,
                                        help=f"Connections per file when the server accepts byte ranges (like aria2c -x), "
                                             f"all from the start. [default: 1, raised to {DEFAULTS.connections} when one "
                                             f"alone would need more than a second for the rest]"),
    url_jobs: int = Option(DEFAULTS.url_jobs, "--url-jobs", min=1, max=1024, help="Requests in flight for per-image URL lists (OCR-VQA)."),
    keep_archives: bool = Option(False, "--keep-archives", help="Keep archives in ROOT/.vlmdata/downloads after unpacking."),
    only_referenced_by: Optional[List[Path]] = Option(None, "--only-referenced-by", help=ONLY_REFERENCED_HELP),
    force: bool = Option(False, "--force", help="Fetch even when the disk preflight says it will not fit."),
    refetch: bool = Option(False, "--refetch", help=REFETCH_HELP),
    update: bool = Option(False, "--update", help=UPDATE_HELP),
    timeout: float = Option(DEFAULTS.timeout, "--timeout", min=0.1, help="Seconds without data before a connection is retried."),
    dry_run: bool = Option(False, "--dry-run", "-n", help="Only say what would be fetched (the same as `vlmdata plan`)."),
    ray: Optional[str] = Option(None, "--ray", metavar="ADDRESS",
                                help="Run the fetch's tasks on the nodes of a Ray cluster: auto (the cluster this "
                                     "machine joined), HOST:PORT, ray://HOST:PORT, or local (a one-machine Ray). --root must be on a "
                                     "filesystem every node mounts at the same path. Needs vlmdata[ray]."),
    shard: Optional[str] = Option(None, "--shard", metavar="I/N",
                                  help="Only share I of N (0 <= I < N) of the fetch's tasks: N processes given "
                                       "the same command and --root do it all (SLURM job arrays, xargs)."),
    url_chunk: int = Option(DEFAULTS.url_chunk, "--url-chunk", min=1,
                            help="URL-list records per task with --ray / --shard."),
    claim_timeout: float = Option(DEFAULTS.claim_timeout, "--claim-timeout", min=1.0,
                                  help="Seconds without a heartbeat after which another machine's claim on a "
                                       "file is stale and taken over."),
    settings: Settings = None,
) -> None:
    """Download, verify and place the named datasets under --root; resumable and idempotent.

    With --layout it then builds that layout's view. Interrupt it any time (Ctrl-C, a crash, a lost connection) and run the same command again: it resumes. A second run with everything present makes no request at all.

    Examples:
      vlmdata fetch coco gqa ocr_vqa textvqa vg --layout llava --root /data/llava
      vlmdata fetch --recipe llava-665k     # its JSON and image folders
      vlmdata fetch --layout llava-eval     # all the layout needs
      vlmdata fetch vicuna-13b-v1.5 \\
          clip-vit-large-patch14-336        # Hub model repos, pinned
      vlmdata fetch phi-2 --update          # to main's newest commit, re-pinned
      vlmdata fetch coco:val2017.zip --connections 8
      vlmdata fetch sam --only-referenced-by \\
          sharegpt4v_instruct_gpt4-vision_cap100k.json
      vlmdata fetch coco --mirror http://cache.local/   # or a local folder
      vlmdata fetch coco gqa --dry-run                  # what it would do
      HF_ENDPOINT=https://hf-mirror.com vlmdata fetch llava_pretrain
      vlmdata fetch sam --ray auto --root /shared/data  # on a Ray cluster
      vlmdata fetch sam --shard 2/8 --root /shared/data # process 2 of 8
    """
    mode = _mode(ray, shard)
    if dry_run:
        show_plan(settings, names, layout, only_referenced_by, recipe, refetch=refetch, update=update)
        return
    cat = settings.catalog
    sel = select(cat, names, layout, recipe)
    specs, lay = sel.specs, sel.layout
    for note in sel.notes:
        settings.info(f"note: {note}")
    if settings.mirror:
        check_base(settings.mirror)
    if settings.hf_endpoint and not settings.hf_endpoint.startswith(("http://", "https://")):
        raise UserError(f"--hf-endpoint {settings.hf_endpoint!r} is not an http(s) URL",
                        hint="give a Hub mirror's address, e.g. --hf-endpoint https://hf-mirror.com")
    wanted, tag = wanted_names(settings, only_referenced_by, specs)
    root = settings.data_root
    notes = sel.notes + _inert(root, specs, keep_archives=keep_archives and not refetch, update=update)
    for note in notes[len(sel.notes):]:
        settings.info(f"note: {note}")
    opts = FetchOptions(jobs=jobs, connections=connections or DEFAULTS.connections, ramp=connections is None,
                        url_jobs=url_jobs, keep_archives=keep_archives,
                        wanted=wanted, wanted_tag=tag, mirror=settings.mirror, hf_endpoint=settings.hf_endpoint,
                        refetch=refetch, update=update, timeout=timeout, url_chunk=url_chunk,
                        claim_timeout=claim_timeout)
    if lay is None and _all_present(root, specs, opts, settings, notes):
        return  # a second run over finished datasets: no lock, no network stack, no request
    from vlmdata.fetch.orchestrate import Fetcher
    from vlmdata.fetch.progress import Progress
    from vlmdata.plan import plan_files

    cmd = "vlmdata fetch " + sel.label + (f" --shard {mode}" if shard else "")
    with root.sharing(cmd) as session:  # other fetches may share the root: each file is claimed (docs/distributed.md)
        progress = Progress(quiet=settings.quiet)
        fetcher = Fetcher(cat, root, opts, progress)
        todo = fetcher.todo(specs)
        if not todo:
            settings.info(f"everything is already here ({len(specs)} file(s) in {root.path}); nothing to download")
        else:
            plan = plan_files(root, todo, mirror_base=settings.mirror, hf_endpoint=settings.hf_endpoint, wanted_tag=tag,
                              refetch=refetch, update=update)
            if not force:
                plan.require_fits(root.path, "free some space, choose another --root, fetch fewer datasets at a time, "
                                             "or pass --force")
            where = f" on the Ray cluster at {ray}" if ray else f", shard {mode}" if shard else ""
            line, progress.total_bytes = _announce(root, specs, plan, where)
            settings.info(line)
        try:
            if ray and todo:
                from vlmdata.fetch.ray_runner import run_on_ray

                report = run_on_ray(mode, specs, todo, cat, root, opts, session.path, quiet=settings.quiet)
            elif shard:
                from vlmdata.fetch.distributed import run_shard

                report = run_shard(mode, specs, todo, cat, root, opts, progress)
            else:
                report = fetcher.run(specs, todo)
        except KeyboardInterrupt:
            # (typer would turn this into a bare exit code 130 without a word)
            raise Interrupted("interrupted: finished files are placed, partial downloads are kept as .part",
                              hint="run the same command again to resume where it stopped") from None
        if not shard:  # (the view --layout builds below, when nothing failed, is left to that build)
            _renew_views(settings, cat, root, report, built=lay if not report.failed else None)
        if lay is not None and not report.failed:
            _build_view(settings, lay, root, report, specs, opts, shared=bool(shard), recipe=recipe is not None)
    _summarise(settings, report, update, warnings=_kept_nothing(report, specs, wanted, only_referenced_by),
               notes=notes)
    if report.failed:
        raise _failure(report.failed, len(specs))


def _announce(root: Root, specs: list[FileSpec], plan: Plan, where: str) -> tuple[str, int | None]:
    """The line said before the run (``plan``: of the files to do), and the bytes it expects to download
    (None: not known before).

    With --update a placed Hub file (or repo) is first only asked about at its branch's newest commit:
    it is re-pinned without a download when the hub proves its bytes unchanged, else downloaded, so
    what it costs is known only once the hub answers; such files (the plan's "check") are counted apart
    from the files to download, and so is a file to download whose size only its pin at the old commit
    gives (the plan's unknown sizes). `fetch --update --dry-run` prints the same plan."""
    checked, unknown = len(plan.checked), len(plan.unknown)
    if checked == len(plan.items):
        return (f"checking {checked} of {len(specs)} file(s) in {root.path} for updates (pinned Hub files)"
                f"{where}: {UPDATE_CHECK}", None)
    line = (f"fetching {len(plan.items) - checked} of {len(specs)} file(s) into {root.path} "
            f"({human_bytes(plan.download_bytes)} to download" + (f", {unknown} of unknown size" if unknown else "")
            + ")" + where)
    if checked:
        line += f"; checking {checked} pinned Hub file(s) for updates: {UPDATE_CHECK}"
    return line, (plan.download_bytes or None) if not checked else None


def _mode(ray: str | None, shard: str | None):
    """The address of --ray or the Shard of --shard (checked before anything is planned), or None."""
    if ray and shard:
        raise UserError("--ray and --shard are two ways to split one fetch; give one of them",
                        hint="--ray ADDRESS on a Ray cluster's head, or --shard I/N in each of N processes")
    if ray:
        from vlmdata.fetch.ray_runner import check_address, require_ray

        check_address(ray)
        require_ray()
        return ray
    if shard:
        from vlmdata.fetch.shard import Shard

        return Shard.parse(shard)
    return None


def _build_view(settings: Settings, lay, root: Root, report: FetchReport, specs: list[FileSpec], opts: FetchOptions,
                *, shared: bool, recipe: bool = False) -> None:
    """The layout's view, once everything it needs is placed; it needs the root alone (no fetch running).
    A shard builds it only when it finds every file placed and no other shard still running. The view
    left without what the layout requires is said (not for ``recipe``: a recipe uses part of its layout,
    e.g. llava-558k's two of llava's eight folders, and what it needs is fetched)."""
    from vlmdata.layouts.build import build_layout
    from vlmdata.manifest.needs import missing_entries

    what = f"vlmdata layout build --layout {lay.name}"
    if shared and not _all_placed(root, specs, opts):
        settings.info(f"the {lay.name} view is left to the shard that finishes last, or to `{what}`")
        return
    try:
        with root.exclusive(what):
            res = build_layout(lay, root)
    except OperationError as e:
        if shared and "another vlmdata command" in e.what:
            settings.info(f"the {lay.name} view is left to the shard that finishes last, or to `{what}`")
            return
        _summarise(settings, report, opts.update)  # what was fetched is placed; only the view failed
        raise
    except VlmdataError:
        _summarise(settings, report, opts.update)
        raise
    gone = missing_entries(lay, lambda e: root.store_path(e.store).exists())
    report.layout = {"name": lay.name, "folder": str(res.folder), "hardlinks": res.hardlinks,
                     "symlinks": res.symlinks, "existing": res.existing, "missing": res.missing,
                     "image_folder": str(res.folder / lay.image_folder),
                     "required_missing": [e.path for e in gone]}
    if gone and not recipe:  # (what was asked is fetched, so exit 0; `layout build` fails with the same words)
        from vlmdata.cli.layout_cmd import incomplete_view

        report.layout["incomplete"] = "; ".join(incomplete_view(lay.name, gone))


def _renew_views(settings: Settings, cat, root: Root, report: FetchReport, built) -> None:
    """Views already in the root that link what this run placed are built again, so none keeps the
    old bytes through a hard link (vlmdata.layouts.refresh); the one --layout builds is left to it."""
    from vlmdata.layouts.refresh import refresh_views, views_using

    placed = [o.to for o in report.outcomes if o.state == "fetched"]
    stale = [v for v in views_using(cat.layouts.values(), root, placed) if built is None or v.name != built.name]
    if not stale:
        return
    try:
        with root.exclusive("vlmdata layout build"):
            renewed = refresh_views(stale, root)
    except VlmdataError as e:  # (the fetch itself is done: say what is left to run, and why)
        busy = isinstance(e, OperationError) and "another vlmdata command" in e.what
        if not busy and not isinstance(e, UserError):
            raise
        runs = "; ".join(f"`vlmdata layout build --layout {v.name}`" for v in stale)
        why = "another vlmdata command runs on the root" if busy else e.what
        todo = f"run {runs} once it is done" if busy else f"move that out of the way, then run {runs}"
        settings.info(f"warning: the views {', '.join(v.name for v in stale)} link what was placed and may still "
                      f"hold the old files ({why}); {todo}")
        return
    report.renewed = [{"name": r.layout, "folder": str(r.folder), "links": r.links} for r in renewed]


def _all_placed(root: Root, specs: list[FileSpec], opts: FetchOptions) -> bool:
    from vlmdata.state.journal import Journal, satisfied

    entries = Journal(root.state_dir).entries()
    return all(satisfied(root, entries, s, opts.wanted_tag) for s in specs)


def _all_present(root: Root, specs: list[FileSpec], opts: FetchOptions, settings: Settings, notes: list[str]) -> bool:
    """Everything already placed (the journal, read without the root lock: it is written atomically)?
    Then report so, exactly as a full run would, and return True."""
    from vlmdata.state.journal import Journal, satisfied

    if opts.refetch or opts.update or not root.state_dir.is_dir():
        return False
    root.ensure_writable()  # fetch is a command that writes: a root it may not write says so, even now
    entries = Journal(root.state_dir).entries()
    if not all(satisfied(root, entries, s, opts.wanted_tag) for s in specs):
        return False
    settings.info(f"everything is already here ({len(specs)} file(s) in {root.path}); nothing to download")
    _summarise(settings, FetchReport(outcomes=[present_outcome(s, entries[s.key]) for s in specs]), notes=notes)
    return True


def _inert(root: Root, specs: list[FileSpec], *, keep_archives: bool, update: bool) -> list[str]:
    """Notes for options this fetch cannot honour, which otherwise read as done: --keep-archives for
    archives placed before (unpacked, their download deleted: only a refetch brings it back, as
    `mirror build` then asks), --update where no selected file is a Hub file on a branch."""
    notes = []
    if keep_archives and root.state_dir.is_dir():
        from vlmdata.state.journal import Journal, is_placed

        entries = Journal(root.state_dir).entries()
        gone = [s.key for s in specs if s.place.kind == "extract" and is_placed(root, entries, s)
                and not root.download_path(s.dataset, s.name).is_file()]
        if gone:
            notes.append(f"--keep-archives keeps the archives this run downloads; {_keys(gone)} "
                         f"{'is' if len(gone) == 1 else 'are'} placed already and the download deleted: "
                         f"`vlmdata fetch {' '.join(gone[:3])}{' ...' if len(gone) > 3 else ''} --refetch "
                         f"--keep-archives` downloads and keeps {'it' if len(gone) == 1 else 'them'}")
    if update:
        from vlmdata.sources.hf import spec_moves_on_update

        if not any(spec_moves_on_update(s) for s in specs):
            notes.append(f"--update re-pins Hub files and repos that follow a branch; none of the selected files "
                         f"is one ({_keys([s.key for s in specs])}): it changes nothing here")
    return notes


def _keys(keys: list[str], show: int = 5) -> str:
    return ", ".join(keys[:show]) + (f" and {len(keys) - show} more" if len(keys) > show else "")


def _kept_nothing(report: FetchReport, specs: list[FileSpec], wanted: set[str] | None,
                  paths: Optional[List[Path]]) -> list[str]:
    """--only-referenced-by whose names are in none of the archives this run unpacked (a JSON for
    another dataset): each was downloaded whole for nothing, which the counts alone do not show.
    (One archive without any of them is normal: 51 SA-1B tars each hold a few of a JSON's images.)"""
    if wanted is None or not paths:
        return []
    unpacked = {s.key for s in specs if s.place.kind == "extract"}
    done = [o for o in report.outcomes if o.state == "fetched" and o.key in unpacked]
    if not done or any(o.files for o in done):
        return []
    return [f"none of the {len(wanted):,} image name(s) referenced by {', '.join(str(p) for p in paths)} is in "
            f"the {len(done)} archive(s) fetched: nothing was placed from them. Is it the JSON of these images? "
            f"(names are matched by their base name, e.g. sa_1.jpg)"]


def _summarise(settings: Settings, report: FetchReport, update: bool = False, warnings: list[str] | None = None,
               notes: list[str] | None = None) -> None:
    """The outcome of every file, then the counts (``update``: the re-pinned ones said even when none),
    then ``warnings`` about the run as a whole; ``notes`` (the selection's, said before the run) go
    into the --json document only."""
    if settings.json:
        doc = report.to_json()
        if warnings:
            doc["warnings"] = warnings
        if notes:
            doc["notes"] = notes
        settings.emit_json(doc)
        return
    if settings.quiet:
        return  # failures are in the error that follows
    for o in report.outcomes:
        if o.state == "present":
            settings.debug(f"  present  {o.key} -> {o.to}")
            continue
        size = human_bytes(o.size) if o.size is not None else (f"{o.files:,} files" if o.files is not None else "")
        echo(f"  {o.state:<9} {o.key:<48} {size:>10}  {o.seconds:6.1f} s  {o.source or ''}", err=True)
        if o.repo_files is not None:  # (--update on a Hub repo: its size is not what came)
            echo(f"            {repo_files_said(o)}", err=True)
        for w in o.warnings:
            echo(f"            warning: {w}", err=True)
    present = sum(o.state == "present" for o in report.outcomes)
    fetched = sum(o.state == "fetched" for o in report.outcomes)
    repinned = sum(o.state == "repinned" for o in report.outcomes)
    # (a Hub repo fetched by --update counts as one item; the files of it that only moved to the new commit
    # are said here too, so "0 re-pinned" does not read as none of them was)
    inside = sum(o.repo_files.get("repinned", 0) for o in report.outcomes if o.state == "fetched" and o.repo_files)
    said = f"{repinned} re-pinned without a download (unchanged), " if repinned or update else ""
    echo(f"{fetched} fetched" + (f" ({inside} unchanged file(s) in them only re-pinned)" if inside else "") + ", " + said
         + f"{present} already present, {len(report.failed)} failed; "
         f"{human_bytes(report.network_bytes)} downloaded in {report.seconds:.1f} s", err=True)
    for v in report.renewed:
        echo(f"layout {v['name']}: {v['links']} link(s) in {v['folder']} renewed to what was placed", err=True)
    if report.layout:
        lay = report.layout
        echo(f"layout {lay['name']}: {lay['folder']} ({lay['hardlinks']} hard links, {lay['symlinks']} symlinks, "
             f"{lay['existing']} already there); pass --image_folder {lay['image_folder']}", err=True)
        if lay["missing"]:
            echo(f"  not fetched yet: {', '.join(lay['missing'])}", err=True)
        if lay.get("incomplete"):
            echo(f"warning: {lay['incomplete']}", err=True)
    for w in warnings or []:
        echo(f"warning: {w}", err=True)


def _failure(failed: list, total: int) -> OperationError:
    """One error for every failed file: files that failed the same way are said once (51 SA-1B
    tars without the links file are one problem), each distinct advice once, at the end."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for o in failed:
        what = (o.error or o.key).replace(o.key, "{file}")
        groups.setdefault((what, o.hint), []).append(o.key)
    lines = []
    for (what, _), keys in groups.items():
        lines.append(what.replace("{file}", keys[0]))
        if len(keys) > 1:
            more = ", ".join(keys[1:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            lines.append(f"  (the same for {more})")
    hints = list(dict.fromkeys(h for (_, h) in groups if h))
    said = any("run the same command again" in h for h in hints)
    futile = all(h is not None and "will not help" in h for (_, h) in groups)
    if not said and not futile:  # (else the advice already says whether to)
        hints.append("run the same command again to retry; finished bytes are not downloaded again")
    return OperationError(f"{len(failed)} of {total} file(s) failed:\n" + "\n".join(lines), hint="\n  -> ".join(hints))


COMMANDS = {"fetch": fetch_cmd}  # (vlmdata.cli.app)

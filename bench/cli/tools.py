"""The looking-around commands: `bench show`, `bench export`, `bench cache`."""

from __future__ import annotations

import yaml
from rich.markup import escape

from bench import console
from bench.cli.commands import EXIT_OK, UsageError, list_status, load


def cmd_show(args) -> int:
    """A variant's resolved configuration, run id, state and files, before or after it runs."""
    from bench.infra.identity import identity, resolve
    from bench.infra.store import Store

    study, variants = load(args)
    chosen = [v for v in variants if v.name == args.variant and (args.seed is None or v.seed == args.seed)]
    if not chosen:
        names = ", ".join(dict.fromkeys(v.name for v in variants))
        raise UsageError(
            f"no variant '{args.variant}'"
            + (f" with seed {args.seed}" if args.seed is not None else "")
            + f" in {args.study}; its variants are: {names}"
        )
    chosen, missing = resolve(chosen, strict=False)
    store = Store(args.results)
    for v in chosen:
        console.out.rule(f"{escape(v.name)} (seed {v.seed})")
        console.out.print(escape(yaml.safe_dump(v.config.model_dump(mode="json"), sort_keys=False)), highlight=False)
        if v.fingerprints is None:
            console.out.print(f"run id: unknown until {escape(missing[v.name])}", highlight=False)
            continue
        d = store.run_dir(v.run_id)
        fp = identity(v.config, v.fingerprints)["fingerprints"]
        console.out.print(
            f"run id: {v.run_id}\nfingerprints: data {fp['data']}, weights {fp['weights']}\n"
            f"state: {list_status(store, study, v, missing)}\nfolder: {d}",
            highlight=False,
        )
        if d.is_dir():
            console.out.print(
                "files: " + ", ".join(sorted(p.name for p in d.iterdir() if not p.name.startswith("."))),
                highlight=False,
            )
    return EXIT_OK


def cmd_export(args) -> int:
    from bench.report.export import runs_table, write

    table = runs_table(args.results, args.study)
    if table.empty:
        raise UsageError(f"no runs in {args.results}; run `bench run STUDY.yaml` first or point --results at a store")
    if args.out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("Parquet needs pyarrow: pip install -e '.[export]' (or export to .csv)") from None
    write(table, args.out)
    for r in table[table["state"] == "damaged"].itertuples():  # in the table without metrics; said here too
        console.warning(f"{r.study}: {r.variant} (seed {r.seed}, run {r.run_id}): {r.detail}; its metrics left out")
    console.err.print(f"{len(table)} runs, {len(table.columns)} columns -> {args.out}", highlight=False)
    return EXIT_OK


def cmd_cache(args) -> int:
    from bench.infra.files import cache_parts, cache_root, clear_cache

    parts = cache_parts()
    if args.action == "clear":
        chosen = list(parts) if args.parts == ["all"] or not args.parts else args.parts
        unknown = set(chosen) - set(parts)
        if unknown:
            raise UsageError(
                f"no part {', '.join(sorted(unknown))} in the cache; it holds: {', '.join(parts) or 'nothing'}"
            )
        freed = clear_cache(chosen)
        console.err.print(
            f"removed {', '.join(chosen)} from {cache_root()}: {freed / 2**20:,.1f} MiB freed", highlight=False
        )
        return EXIT_OK
    console.out.print(f"{cache_root()}", highlight=False)
    for name, (files, size) in parts.items():
        console.out.print(f"  {name:<20} {files:>7,} files {size / 2**20:>10,.1f} MiB", highlight=False)
    total = sum(size for _, size in parts.values())
    console.out.print(f"  {'total':<20} {'':>13} {total / 2**20:>10,.1f} MiB", highlight=False)
    return EXIT_OK

"""`lg-pipeline gradients`: per-example gradient statistics of one model on one study-format JSON file."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gradients", help="per-example gradient statistics of one model on one JSON file")
    g.add_argument("--model", required=True, help="catalog name or local transformers folder")
    g.add_argument("--data", required=True, help="study-format JSON: list of {instruction, input, output}")
    g.add_argument("--out", required=True, help="output Parquet (resumes if a previous run stopped midway)")
    g.add_argument("--limit", type=int, default=None, help="the first N examples (N >= 1)")
    g.add_argument("--prune", action="store_true", help="drop examples of earlier runs not asked for this time")
    g.add_argument("--chat", dest="chat", action="store_true", default=None, help="wrap in the chat template")
    g.add_argument("--no-chat", dest="chat", action="store_false")
    g.add_argument("--max-length", type=int, default=1024)
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--max-batch-tokens", type=int, default=None,
                   help="padded tokens per forward/backward (default: 1024 on a CPU, 8192 on a GPU)")
    g.add_argument("--method", choices=["core", "full-svd"], default="core")
    g.add_argument("--stats-schedule", choices=["after-backward", "in-hook"], default=None,
                   help="statistics after the backward on one thread per core, or in the backward hook as each "
                        "gradient arrives; the same numbers (default: in-hook on CUDA, after-backward on a CPU)")
    g.add_argument("--encoding", choices=["pair", "study"], default="pair",
                   help="pair: prompt and response tokenized apart (default); study: the study's whole-text rules")
    g.add_argument("--targets", default="q,k,v,o", help="module-name suffixes, e.g. q,k,v,o,gate,up,down or fc1")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the catalog's)")
    g.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from data_sources.models.catalog import open_model
    from lg_pipeline.cli.runs import check_model_inputs, progress_bar
    from lg_pipeline.errors import InputError
    from lg_pipeline.gradients.engine import EngineConfig
    from lg_pipeline.gradients.runner import check_engine_settings, check_output_path, run_to_parquet
    from lg_pipeline.gradients.targets import find_targets, parse_suffixes
    from lg_pipeline.io.locks import output_lock
    from lg_pipeline.io.manifest import data_file_fields
    from lg_pipeline.io.study_json import load_study_json

    if args.limit is not None and args.limit < 1:  # `--limit -1` would silently drop the last row
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    config = EngineConfig(
        args.method, parse_suffixes(args.targets), args.batch_size, args.max_length, False,
        encoding=args.encoding, max_batch_tokens=args.max_batch_tokens, stats_schedule=args.stats_schedule,
    )
    check_engine_settings(config)
    out = check_output_path(args.out, [args.data])  # before anything is loaded: nothing is touched on bad input
    check_model_inputs(args.model, args.device, args.dtype)
    rows = load_study_json(args.data)
    examples = rows[: args.limit]
    with output_lock(out, wait=False):  # a second writer is refused here, naming the holder
        model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
        config = dataclasses.replace(config, chat=spec.chat if args.chat is None else args.chat)
        find_targets(model, config.targets)  # a bad --targets fails here, before the progress bar is drawn
        provenance = {
            "model": spec.name, "model_source": spec.source, **data_file_fields(args.data), "limit": args.limit,
            "n_examples": len(rows),
        }
        with progress_bar(len(examples), "ex", spec.display_name) as bar:
            summary = run_to_parquet(
                model, tokenizer, examples, config, out, report=bar.write, prune=args.prune, wait=False,
                inputs=[args.data], provenance=provenance,
            )
            bar.update(len(examples))
    print(f"wrote {out}: {summary.counts} in {summary.seconds:.1f}s (resumed {summary.resumed})")
    if summary.truncated:
        print(f"  {summary.truncated} responses cut at --max-length {args.max_length} (rows flagged `truncated`)")
    for problem in summary.problems:
        print(f"  {problem['status']}: {problem['example_id']}: {problem['reason']}", file=sys.stderr)
    return 0 if summary.counts["ok"] else 1

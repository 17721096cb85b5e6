"""Command line of the MoMeM pipeline: python -m momem data|train|ask|add|eval (see momem/__init__.py)."""
import os
import sys

import config
import presets
import data
import tools
import train
from momem import people
from momem.examples import DEFAULT_DIR
from momem.pipeline import MODULES, SPLITS, Pipeline, check_question, open_store, report


def main(argv=None):
    parser = tools.ArgumentParser(prog="python -m momem", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("data", help="generate the people data (and a fresh memory store)")
    p.add_argument("--out", default=DEFAULT_DIR)
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("train", help="train modules with the shared trainer (progress bar, checkpoints)")
    p.add_argument("module", choices=[*MODULES, "all"])
    p.add_argument("--resume", action="store_true", help="continue trained/momem_MODULE from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="retrain a module whose run folder exists")
    p.add_argument("--force", action="store_true", help="with --overwrite: replace even the committed (shipped) modules")
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--no_progress", action="store_true")
    p = commands.add_parser("ask", help="ask the chained pipeline a question")
    p.add_argument("question")
    p.add_argument("--exact", action="store_true", help="exact name lookup only (no fuzzy near-miss match)")
    p = commands.add_parser("add", help="add (or with --update, change) a person in the memory store")
    p.add_argument("name", help='"First Last"')
    for category in people.CATEGORIES:
        p.add_argument(f"--{category}", required=False, default=None)
    p.add_argument("--update", action="store_true")
    p = commands.add_parser("eval", help="evaluate every stage and the chain; writes report.md and report.png")
    p.add_argument("--out", default=os.path.join(config.ROOT, "comparison", "momem"))
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--limit", type=int, default=None, help="questions per split (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "data":
            people.write(args.out, args.seed)
            print(f"wrote {args.out} ({len(open_store(folder=args.out))} people in the memory store)")
        elif args.command == "train":
            for module in MODULES if args.module == "all" else [args.module]:
                name = MODULES[module]
                if args.resume:
                    train.resume_run(os.path.join(config.ROOT, "trained", name), progress=not args.no_progress)
                    continue
                overrides = {"max_steps": args.max_steps} if args.max_steps is not None else {}
                model_cfg, train_cfg = presets.get_preset(name, name=name, **overrides)  # the folder the pipeline reads
                train.train(model_cfg, train_cfg, overwrite=args.overwrite, force=args.force, progress=not args.no_progress,
                            command="python -m momem " + " ".join(sys.argv[1:] if argv is None else argv))
        elif args.command == "ask":
            question = check_question(args.question)  # before the models load
            a = Pipeline().ask(question, fuzzy=not args.exact)
            print(f"NER: {a.name!r} -> memory: {a.found or 'not found'} ({a.lookup or '-'}) -> summary: "
                  f"{a.summary!r}\n{a.answer}")
        elif args.command == "add":
            store = open_store()
            facts = {c: getattr(args, c) for c in people.CATEGORIES if getattr(args, c) is not None}
            if args.update:
                store.update(args.name, **facts)
            else:
                first, _, last = args.name.partition(" ")
                store.add({"name": args.name, "first": first, "last": last, **facts})
            print(f"stored {args.name}: {store.get(args.name)['content']}")
        else:
            splits = [s for s in args.splits.split(",") if s]
            unknown = set(splits) - set(people.SPLITS)
            if unknown:
                raise ValueError(f"--splits {sorted(unknown)} invalid: choose from {', '.join(people.SPLITS)}")
            _, _, markdown = report(Pipeline(), splits, args.limit, out_dir=args.out)
            print(markdown + f"\nwrote {os.path.join(args.out, 'report.md')} and report.png")
    except (*tools.USER_ERRORS, KeyError, data.DataUnavailable) as e:
        tools.fail(e)


if __name__ == "__main__":
    main()

"""Hallucination benchmarks (POPE, CHAIR, MMHal-Bench, AMBER, Object HalBench,
HallusionBench) on any backend; and run comparison.

Two forms:
  bpo eval --bench NAME --out DIR ...               answer (or score given answers), then score
  bpo eval compare A/results.json B/results.json    metrics side by side, differences to A

A run writes DIR/predictions.jsonl (appended as batches finish: re-running the
same command resumes) and DIR/results.json, and prints a table. Answers are
generated greedily (temperature 0) unless told otherwise.

Benchmarks and their files:
  pope   --data: a question file (coco_pope_{split}.json: JSON Lines of question_id,
         image, text, label) or a folder of them; or --pope-split NAME=FILE (repeatable).
         Answers are parsed as the reference scorer does (--parser reference, default)
         or with negations understood (--parser robust); how many answers the two
         read differently is reported beside the metrics.
  chair  --data: JSON/JSONL records with image (and image_id, objects or
         meta.objects, prompt: all optional). Ground truth from --coco-instances
         and/or --coco-captions (instances_val2014.json, captions_val2014.json),
         else from each record's objects.
  mmhal  --data: MMHal-Bench's response_template.json (96 questions); images are
         looked up under --image-root by the file name of image_src (nothing is
         downloaded). A judge rates each answer: --judge-model, --judge-base-url
         (an OpenAI-compatible endpoint); its answers are cached in DIR/judge_cache.jsonl.
         Ratings are read as the reference scorer reads them ("rating: N", exactly
         one N in 0-6, else 0; --parser reference) or leniently (--parser robust).
  amber  --amber-dir: AMBER's data/ folder (annotations.json, relation.json,
         safe_words.txt); --data: one of its query files (query/query_all.json by
         default; query_generative.json, query_discriminative*.json: JSON arrays of
         id, image, query); images AMBER_N.jpg under --image-root. Descriptions get
         CHAIR, Cover, Hal, Cog; yes/no questions accuracy, precision, recall, F1
         ("No" the positive class) per dimension; both: the AMBER score. Yes/no
         answers must be exactly "Yes"/"No" (--parser reference) or are read with
         negations understood (--parser robust).
  objhal --data: obj_halbench_300_with_image.jsonl (JSON Lines of image_id, question,
         image: base64 or a path under --image-root); ground truth from
         --coco-instances and --coco-captions (repeatable: train2014 and val2014, as
         the reference combines them). Objects are found by bpo's lexicon
         (--objects-from lexicon, LLM-free) or listed by a judge (--objects-from
         judge, with --judge-model). CHAIR_s, CHAIR_i, recall.
  hallusion --data: HallusionBench.json (category, subcategory, visual_input, set_id,
         figure_id, question_id, question, gt_answer, filename); images are filename
         under --image-root (the folder holding hallusion_bench/). aAcc, fAcc, qAcc,
         easy/hard aAcc, overall and per VD/VS. Answers read as lmms-eval's judge-free
         rule ("yes" anywhere: yes; --parser reference) or --parser robust.

--predictions FILE scores existing answers without generating. FILE is JSON
Lines or a JSON array; each answer is in "answer" (or "text", "model_answer",
"caption", "response", "output") and names its item by "id" (bpo's own
predictions.jsonl), else by "question_id" (+ "split" or "category") for POPE,
"image_id" or "image" for CHAIR and Object HalBench (RLAIF-V's answer files),
AMBER's "id" (its response files: [{"id", "response"}]), HallusionBench's
category/subcategory/set_id/figure_id/question_id (its result files with
"model_prediction", and lmms-eval's logged samples, --log_samples, whose answer
is "filtered_resps"), else by its position in the file (POPE's reference answer
files, MMHal-Bench response files). MMHal-Bench response files and HallusionBench
result files hold the questions too, so --data may be left out.

examples:
  bpo eval --bench pope --data pope/ --image-root val2014 --model runs/llava \\
      --backend hf --out eval/pope-llava
  bpo eval --bench chair --data chair500.jsonl --image-root val2014 \\
      --coco-instances annotations/instances_val2014.json \\
      --coco-captions annotations/captions_val2014.json \\
      --model llava --backend openai --base-url http://127.0.0.1:8000/v1 --out eval/chair
  bpo eval --bench mmhal --predictions response.json --judge-model gpt-4o \\
      --judge-base-url https://api.openai.com/v1 --out eval/mmhal
  bpo eval --bench amber --amber-dir AMBER/data --image-root AMBER/image \\
      --model runs/llava --out eval/amber
  bpo eval --bench hallusion --predictions HallusionBench_result.json --out eval/hb
  bpo eval compare eval/pope-base/results.json eval/pope-bpo/results.json
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.commands.options import (
    BACKENDS,
    add_engine_options,
    add_image_root,
    add_model_options,
    add_on_error,
    backend_options,
    engine_options,
)

# The names of `bpo.eval.benches.BENCHES`, here so that --help imports nothing heavy
# (a test keeps the two equal).
BENCHES = ("pope", "chair", "mmhal", "amber", "objhal", "hallusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "compare",
        nargs="*",
        metavar="compare RESULTS.json",
        help="compare results files side by side (instead of running a benchmark)",
    )
    parser.add_argument("--bench", choices=BENCHES, help="the benchmark to run")
    parser.add_argument("--data", help="the benchmark's file (POPE: a file or a folder)")
    parser.add_argument(
        "--pope-split",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="pope: a split's question file (repeatable)",
    )
    add_image_root(parser)
    parser.add_argument("--out", help="output folder (resumed if it exists)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the answers in --out instead of resuming them; without it, answers "
        "made with other settings are refused",
    )
    parser.add_argument(
        "--predictions", metavar="FILE", help="score the answers in FILE instead of generating"
    )
    parser.add_argument("--limit", type=int, help="only the first N items (of each POPE split)")
    parser.add_argument(
        "--prompt", help="prompt template; {question} is replaced (default: the benchmark's)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="items per backend call")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="answer length (default: pope, hallusion 128; chair, amber, objhal 512; mmhal 1024)",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    add_on_error(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_engine_options(parser)

    add_model_options(parser, title="model (what answers)")

    reading = parser.add_argument_group("answer reading (pope, amber, hallusion, mmhal)")
    reading.add_argument(
        "--parser",
        choices=("reference", "robust"),
        default="reference",
        help="the reference scorer's rule (default) or a robust reading (negations "
        "understood; mmhal: lenient rating formats); how many answers the two read "
        "differently is reported",
    )

    chair = parser.add_argument_group("chair, objhal")
    chair.add_argument(
        "--coco-instances", metavar="FILE", action="append",
        help="e.g. instances_val2014.json (repeatable)",
    )  # fmt: skip
    chair.add_argument(
        "--coco-captions", metavar="FILE", action="append",
        help="e.g. captions_val2014.json (repeatable)",
    )  # fmt: skip
    chair.add_argument("--lexicon", metavar="FILE", help="object lexicon extending COCO's")
    chair.add_argument(
        "--objects-from",
        choices=("lexicon", "judge"),
        default="lexicon",
        help="objhal: objects found by the lexicon (default) or listed by the judge",
    )

    amber = parser.add_argument_group("amber")
    amber.add_argument(
        "--amber-dir", metavar="DIR", help="AMBER's data/ folder (annotations, relations)"
    )

    judge = parser.add_argument_group("judge (mmhal; objhal --objects-from judge)")
    judge.add_argument("--judge-backend", choices=BACKENDS, default="openai")
    judge.add_argument("--judge-model", help="the judge model (GPT-4-class)")
    judge.add_argument("--judge-base-url", help="openai: the judge's server URL")
    judge.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="openai: key variable")
    judge.add_argument("--judge-cache", metavar="FILE", help="default: OUT/judge_cache.jsonl")
    judge.add_argument(
        "--judge-unparsed",
        choices=("zero", "exclude"),
        default="zero",
        help="a judgement without a usable rating counts 0 (as the reference) or is left out",
    )
    judge.add_argument("--judge-max-new-tokens", type=int, default=1024)


def run(args: argparse.Namespace) -> int:
    from bpo.errors import ConfigError

    if args.compare:
        if args.compare[0] != "compare":
            raise ConfigError(
                f"unexpected argument {args.compare[0]!r}: use 'bpo eval compare FILES' "
                "or 'bpo eval --bench ...'"
            )
        from bpo.eval.compare import compare_results

        print(compare_results(args.compare[1:]))
        return 0
    from bpo.eval.compare import format_results

    results = execute(args)
    print(format_results(results))
    from bpo.console import say

    say(f"results: {args.out}/results.json")
    return 0


def execute(args: argparse.Namespace) -> Any:
    """A benchmark run (`bpo.evaluate(...)` calls it too); returns its results."""
    from bpo.errors import ConfigError
    from bpo.eval.runner import EvalOptions, evaluate

    if not args.bench or not args.out:
        raise ConfigError("give --bench and --out (or: bpo eval compare RESULTS.json ...)")

    generating = args.predictions is None
    options = EvalOptions(
        bench=args.bench,
        out=args.out,
        data=args.data,
        pope_splits=args.pope_split,
        image_root=args.image_root,
        predictions=args.predictions,
        model=args.model,
        backend=args.backend,
        backend_options=backend_options(
            args.backend,
            args,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            batch_size=args.batch_size,
        )
        if generating and args.model
        else {},
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        limit=args.limit,
        prompt=args.prompt,
        parser=args.parser,
        coco_instances=args.coco_instances,
        coco_captions=args.coco_captions,
        lexicon=args.lexicon,
        amber_dir=args.amber_dir,
        objects_from=args.objects_from,
        judge_backend=args.judge_backend,
        judge_model=args.judge_model,
        judge_options=backend_options(
            args.judge_backend,
            args,
            base_url=args.judge_base_url,
            api_key_env=args.judge_api_key_env,
            batch_size=args.batch_size,
        )
        if args.bench in ("mmhal", "objhal") and args.judge_model
        else {},
        judge_cache=args.judge_cache,
        judge_unparsed=args.judge_unparsed,
        judge_max_new_tokens=args.judge_max_new_tokens,
        on_error=args.on_error,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        engine=engine_options(args),
    )
    return evaluate(options)

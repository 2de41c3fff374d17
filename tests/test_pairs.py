import json
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path
from statistics import median

import pytest

from bpo.cli import main
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.lexicon import ObjectLexicon
from bpo.pairs import (
    REASONS,
    PairFilter,
    build_pairs,
    mix_quotas,
    normalize_text,
    parse_mix,
    similarity,
    stats_path,
)

GOLD = "A dog sleeps on a red sofa next to a window."


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def sample(sample_id, response=GOLD, image="a.jpg"):
    prompt = [{"role": "user", "content": f"Describe image {sample_id}."}]
    return {"id": sample_id, "image": image, "prompt": prompt, "response": response}


def negative(sample_id, text, strategy="image-weakening", k=0):
    return {
        "id": f"{sample_id}/{strategy}/{k}",
        "sample_id": sample_id,
        "strategy": strategy,
        "text": text,
        "params": {"seed": k},
    }


# --- text measures ----------------------------------------------------------------------


def test_normalize_text_lowercases_strips_punctuation_and_collapses_space():
    assert normalize_text("  A DOG,   on the\tsofa!! ") == "a dog on the sofa"


def test_similarity_is_word_level_so_a_changed_count_stays_distinct():
    assert similarity("There are 2 dogs.", "there are 3 dogs") == pytest.approx(0.75)
    assert similarity("A cat.", "a CAT") == 1.0
    assert similarity("red apple", "green pear") == 0.0


# --- filters ----------------------------------------------------------------------------


def test_each_filter_reason_is_counted_once(tmp_path):
    long_text = " ".join(["word"] * 12)
    samples = [sample("s1"), sample("s2"), sample("s3", response=long_text)]
    negatives = [
        negative("s1", "A cat sits on a blue chair by the door.", k=0),  # kept
        negative("s1", "   ", k=1),  # empty
        negative("s1", "a dog sleeps on a red sofa, next to a window", k=2),  # identical
        negative("s1", "A dog sleeps on a red sofa next to a door.", k=3),  # near-identical
        negative("s1", "A cat sits on a blue chair by the door!", k=4),  # duplicate of k=0
        negative("s2", "A cat sits on a blue chair by the door.", k=0),  # kept: other sample
        negative("s3", "A short answer.", k=0),  # too-long: the chosen has 12 words
    ]
    stats = build_pairs(
        write_jsonl(tmp_path / "samples.jsonl", samples),
        [write_jsonl(tmp_path / "negatives.jsonl", negatives)],
        tmp_path / "pairs.jsonl",
        max_words=11,
        max_similarity=0.9,
    )
    dropped = stats.dropped_total()
    assert dropped == Counter(
        {
            "empty": 1,
            "too-long": 1,
            "identical": 1,
            "near-identical": 1,
            "no-absent-object": 0,
            "duplicate": 1,
            "mix": 0,
        }
    )
    written = read_jsonl(tmp_path / "pairs.jsonl")
    assert [pair["id"] for pair in written] == ["s1/image-weakening/0", "s2/image-weakening/0"]
    assert written[0]["chosen"] == GOLD
    assert written[0]["rejected"] == "A cat sits on a blue chair by the door."
    assert written[0]["prompt"] == samples[0]["prompt"]
    assert written[0]["image"] == "a.jpg"
    assert written[0]["strategy"] == "image-weakening"
    assert sum(stats.kept.values()) == 2 and sum(stats.negatives.values()) == 7


def test_an_image_weakening_pair_carries_the_distortion_of_its_negative(tmp_path):
    from bpo.data.records import Pair
    from bpo.distort import describe

    distortion = describe("diffusion", {"step": 700}, 11)
    weakened = {**negative("s1", "A cat on a chair."), "params": {"distortion": distortion}}
    injected = negative("s1", "A dog on a blue sofa.", strategy="llm-injection")
    build_pairs(
        write_jsonl(tmp_path / "samples.jsonl", [sample("s1")]),
        [write_jsonl(tmp_path / "negatives.jsonl", [weakened, injected])],
        tmp_path / "pairs.jsonl",
    )
    by_strategy = {pair["strategy"]: pair for pair in read_jsonl(tmp_path / "pairs.jsonl")}
    assert by_strategy["image-weakening"]["weakening"] == distortion
    assert "weakening" not in by_strategy["llm-injection"]  # records without one are unchanged
    bad = {**by_strategy["image-weakening"], "weakening": {"kind": "diffusion", "seed": "11"}}
    with pytest.raises(RecordError, match="field 'weakening' must be null or an object"):
        Pair.from_dict(bad)


def test_a_pair_is_counted_under_the_first_reason_in_the_documented_order():
    pair_filter = PairFilter(max_words=3)
    from bpo.data.records import Pair

    prompt = [{"role": "user", "content": "q"}]
    too_long_and_identical = Pair(
        "p1", None, prompt, "one two three four", "one two three four", "x"
    )
    assert pair_filter.reason(too_long_and_identical, "s") == "too-long"
    assert PairFilter().reason(too_long_and_identical, "s") == "identical"
    assert REASONS.index("too-long") < REASONS.index("identical")


def test_max_similarity_threshold_decides_near_identical():
    from bpo.data.records import Pair

    prompt = [{"role": "user", "content": "q"}]
    pair = Pair("p", None, prompt, "there are 2 dogs", "there are 3 dogs", "x")
    assert PairFilter(max_similarity=0.9).reason(pair, "s") is None
    assert PairFilter(max_similarity=0.7).reason(pair, "s") == "near-identical"


def test_require_absent_object_keeps_only_negatives_naming_a_new_object(tmp_path):
    negatives = [
        negative("s1", "A dog and a cat sleep on a red sofa.", k=0),  # adds a cat: kept
        negative("s1", "A puppy naps on a couch by the window.", k=1),  # synonyms only
        negative("s1", "A red sofa in an empty room.", k=2),  # fewer objects
    ]
    stats = build_pairs(
        write_jsonl(tmp_path / "samples.jsonl", [sample("s1")]),
        [write_jsonl(tmp_path / "negatives.jsonl", negatives)],
        tmp_path / "pairs.jsonl",
        lexicon=ObjectLexicon.default(),
    )
    assert [p["id"] for p in read_jsonl(tmp_path / "pairs.jsonl")] == ["s1/image-weakening/0"]
    assert stats.dropped_total()["no-absent-object"] == 2


def test_filter_options_are_checked():
    with pytest.raises(ConfigError, match="max_similarity"):
        PairFilter(max_similarity=1.5)
    with pytest.raises(ConfigError, match="max_words"):
        PairFilter(max_words=0)


# --- mixing -----------------------------------------------------------------------------


def test_mix_quotas_take_the_largest_total_that_respects_the_ratios():
    counts = {"a": 10, "b": 3, "c": 5}
    # 1:1 -> b binds: 3 + 3; c is not listed, so none of it.
    assert mix_quotas(counts, {"a": Fraction(1), "b": Fraction(1)}) == {"a": 3, "b": 3, "c": 0}
    # 2:1 -> total = min(10 / (2/3), 3 / (1/3)) = 9 -> 6 + 3.
    assert mix_quotas(counts, {"a": Fraction(2), "b": Fraction(1)}) == {"a": 6, "b": 3, "c": 0}
    # 0.5/0.3/0.2 -> total = min(10 / 0.5, 3 / 0.3, 5 / 0.2) = 10 (b binds): 5 + 3 + 2.
    quotas = mix_quotas(counts, parse_mix(["a=0.5", "b=0.3", "c=0.2"]))
    assert quotas == {"a": 5, "b": 3, "c": 2}


def test_mix_refuses_a_strategy_without_pairs_and_bad_items():
    with pytest.raises(ConfigError, match="no pairs left"):
        mix_quotas({"a": 4}, {"a": Fraction(1), "b": Fraction(1)})
    for items in (["a"], ["a=x"], ["a=-1"], ["a=1", "a=2"], ["a=0"]):
        with pytest.raises(ConfigError):
            parse_mix(items)


def mixed_inputs(tmp_path, order_seed=None):
    samples = [sample(f"s{i}") for i in range(12)]
    counts = {"image-weakening": 12, "cooccurrence": 8}
    negatives = [
        negative(f"s{i}", f"A {strategy} answer about thing number {i}.", strategy=strategy)
        for strategy, count in counts.items()
        for i in range(count)
    ]
    if order_seed is not None:
        random.Random(order_seed).shuffle(negatives)
    return (
        write_jsonl(tmp_path / "samples.jsonl", samples),
        write_jsonl(tmp_path / f"negatives{order_seed}.jsonl", negatives),
    )


def test_mix_follows_the_ratios_and_does_not_depend_on_input_order(tmp_path):
    ratios = parse_mix(["image-weakening=3", "cooccurrence=1"])
    samples, negatives = mixed_inputs(tmp_path)
    stats = build_pairs(samples, [negatives], tmp_path / "a.jsonl", mix=ratios, seed=1)
    kept = read_jsonl(tmp_path / "a.jsonl")
    # 12 and 8 at 3:1 -> image-weakening binds at total 16: 12 + 4.
    assert Counter(p["strategy"] for p in kept) == {"image-weakening": 12, "cooccurrence": 4}
    assert stats.dropped_total()["mix"] == 4
    assert stats.dropped["cooccurrence"]["mix"] == 4

    _, shuffled = mixed_inputs(tmp_path, order_seed=7)
    # A spill file left by a run killed while mixing is overwritten, not read.
    stale = tmp_path / ".b.jsonl.mix-candidates.jsonl"
    write_jsonl(stale, [{"id": "stale", "torn": True}])
    build_pairs(samples, [shuffled], tmp_path / "b.jsonl", mix=ratios, seed=1)
    assert {p["id"] for p in read_jsonl(tmp_path / "b.jsonl")} == {p["id"] for p in kept}

    build_pairs(samples, [negatives], tmp_path / "c.jsonl", mix=ratios, seed=2)
    other = {p["id"] for p in read_jsonl(tmp_path / "c.jsonl")}
    assert len(other) == 16 and other != {p["id"] for p in kept}  # 1 in 70 to agree
    assert not list(tmp_path.glob(".*")), "the spill files are removed"


# --- stats ------------------------------------------------------------------------------


def test_stats_file_holds_counts_and_word_lengths_per_strategy(tmp_path, capsys):
    samples, negatives = mixed_inputs(tmp_path)
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(samples), str(negatives), "--out", str(out)]) == 0
    assert stats_path(out) == tmp_path / "pairs.stats.json"
    stats = json.loads(stats_path(out).read_text())
    written = read_jsonl(out)
    assert stats["kept"] == len(written) == 20
    assert stats["negatives"] == 20
    assert set(stats["dropped"]) == set(REASONS)
    assert stats["options"]["max_words"] == 350
    for name, entry in stats["strategies"].items():
        mine = [p for p in written if p["strategy"] == name]
        assert entry["kept"] == len(mine)
        rejected = [len(p["rejected"].split()) for p in mine]
        assert entry["rejected_words"]["max"] == max(rejected)
        assert entry["rejected_words"]["median"] == median(rejected)
        assert entry["rejected_words"]["mean"] == pytest.approx(sum(rejected) / len(rejected))
        assert entry["chosen_words"]["max"] == len(GOLD.split())
    table = capsys.readouterr().out
    assert "image-weakening" in table and "cooccurrence" in table and "total" in table


# --- unknown samples --------------------------------------------------------------------


def unknown_inputs(tmp_path):
    negatives = [negative("s1", "A cat on a chair."), negative("s404", "A cat on a chair.")]
    return (
        write_jsonl(tmp_path / "samples.jsonl", [sample("s1")]),
        write_jsonl(tmp_path / "negatives.jsonl", negatives),
    )


def test_unknown_sample_is_skipped_and_reported_with_id_file_and_line(tmp_path):
    samples, negatives = unknown_inputs(tmp_path)
    out = tmp_path / "pairs.jsonl"
    stats = build_pairs(samples, [negatives], out, policy=ErrorPolicy("skip"))
    assert [p["id"] for p in read_jsonl(out)] == ["s1/image-weakening/0"]
    assert stats.skipped == {"unknown-sample": 1}
    (skipped,) = json.loads((tmp_path / "pairs.jsonl.skipped.json").read_text())["skipped"]
    assert skipped["record_id"] == "s404/image-weakening/0"
    assert skipped["path"] == str(negatives) and skipped["line"] == 2
    assert skipped["kind"] == "unknown-sample"


def test_unknown_sample_raises_by_default(tmp_path, capsys):
    samples, negatives = unknown_inputs(tmp_path)
    with pytest.raises(RecordError, match=r"s404/image-weakening/0.*negatives\.jsonl:2"):
        build_pairs(samples, [negatives], tmp_path / "pairs.jsonl")
    out = str(tmp_path / "cli.jsonl")
    assert main(["pairs", str(samples), str(negatives), "--out", out]) == 2
    assert "s404" in capsys.readouterr().err


def test_no_matching_sample_at_all_is_a_config_error(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [sample("other")])
    negatives = write_jsonl(tmp_path / "negatives.jsonl", [negative("s1", "A cat.")])
    with pytest.raises(ConfigError, match="none of the 1 sample ids"):
        build_pairs(samples, [negatives], tmp_path / "pairs.jsonl", policy=ErrorPolicy("skip"))


def test_bad_and_repeated_negatives_go_through_the_policy(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [sample("s1")])
    negatives = tmp_path / "negatives.jsonl"
    good = json.dumps(negative("s1", "A cat on a chair."))
    negatives.write_text(good + "\n{not json\n" + good + "\n", encoding="utf-8")
    policy = ErrorPolicy("skip")
    build_pairs(samples, [negatives], tmp_path / "pairs.jsonl", policy=policy)
    assert policy.counts == {"bad-json": 1, "duplicate-id": 1}
    assert len(read_jsonl(tmp_path / "pairs.jsonl")) == 1


# --- resume -----------------------------------------------------------------------------


def test_resume_after_a_partial_write_gives_the_full_set_without_duplicates(tmp_path):
    samples, negatives = mixed_inputs(tmp_path)
    ratios = parse_mix(["image-weakening=1", "cooccurrence=1"])
    fresh = tmp_path / "fresh.jsonl"
    build_pairs(samples, [negatives], fresh, mix=ratios)
    expected = read_jsonl(fresh)

    # A run killed after two pairs and half of a third (its settings record is written
    # before the first pair).
    out = tmp_path / "pairs.jsonl"
    lines = fresh.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:20])
    Path(f"{out}.settings.json").write_bytes(Path(f"{fresh}.settings.json").read_bytes())
    stats = build_pairs(samples, [negatives], out, mix=ratios)
    resumed = read_jsonl(out)
    assert len({p["id"] for p in resumed}) == len(resumed) == len(expected)
    assert sorted(resumed, key=lambda p: p["id"]) == sorted(expected, key=lambda p: p["id"])
    assert (stats.already_present, stats.written) == (2, len(expected) - 2)

    again = build_pairs(samples, [negatives], out, mix=ratios)
    assert (again.already_present, again.written) == (len(expected), 0)
    assert read_jsonl(out) == resumed


def test_resume_refuses_a_file_written_with_other_options_or_inputs(tmp_path):
    samples, negatives = mixed_inputs(tmp_path)
    out = tmp_path / "pairs.jsonl"
    build_pairs(samples, [negatives], out)
    with pytest.raises(ConfigError, match="max_similarity"):
        build_pairs(samples, [negatives], out, max_similarity=0.5)
    fewer = write_jsonl(tmp_path / "fewer.jsonl", read_jsonl(negatives)[:5])
    with pytest.raises(ConfigError, match="15 pairs that this run does not select"):
        build_pairs(samples, [fewer], out)
    stats = build_pairs(samples, [fewer], out, resume=False)
    assert stats.written == 5 and len(read_jsonl(out)) == 5


def test_cli_refuses_lexicon_without_require_absent_object(tmp_path, capsys):
    samples, negatives = unknown_inputs(tmp_path)
    argv = ["pairs", str(samples), str(negatives), "--out", str(tmp_path / "p.jsonl")]
    assert main([*argv, "--lexicon", "x.json"]) == 2
    assert "--require-absent-object" in capsys.readouterr().err


def test_the_fast_similarity_check_agrees_with_similarity():
    from bpo.pairs.filters import _more_similar_than

    rng = random.Random(0)
    vocabulary = ["a", "dog", "cat", "on", "the", "red", "sofa", "2", "3"]
    for _ in range(500):
        first = [rng.choice(vocabulary) for _ in range(rng.randint(0, 12))]
        second = [rng.choice(vocabulary) for _ in range(rng.randint(0, 12))]
        threshold = rng.choice([0.0, 0.5, 0.75, 0.9, 0.99])
        expected = similarity(" ".join(first), " ".join(second)) > threshold
        assert _more_similar_than(first, second, threshold) == expected


def test_cli_defaults_and_choices_match_the_library():
    from bpo.commands import pairs as command
    from bpo.data.formats import FORMATS
    from bpo.exports import EXPORT_FORMATS
    from bpo.pairs import DEFAULT_MAX_SIMILARITY, DEFAULT_MAX_WORDS

    assert ("auto", *FORMATS) == command._FORMATS
    assert command._EXPORTS == EXPORT_FORMATS
    assert (command._MAX_WORDS, command._MAX_SIMILARITY) == (
        DEFAULT_MAX_WORDS,
        DEFAULT_MAX_SIMILARITY,
    )


def test_cli_mix_into_a_new_folder(tmp_path):
    samples, negatives = mixed_inputs(tmp_path)
    out = tmp_path / "new" / "folder" / "pairs.jsonl"
    argv = ["pairs", str(samples), str(negatives), "--out", str(out)]
    assert main([*argv, "--mix", "image-weakening=1", "cooccurrence=1", "--seed", "3"]) == 0
    assert Counter(p["strategy"] for p in read_jsonl(out)) == {
        "image-weakening": 8,
        "cooccurrence": 8,
    }

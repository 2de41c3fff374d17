"""`bpo report` without a browser: what the page says, how it samples, how it fails."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpo.cli import main
from bpo.data.images import load_image
from bpo.errors import ConfigError, ErrorPolicy, RecordError
from bpo.report import ReportOptions, write_report
from bpo.report.gallery import BottomKSampler, word_diff
from bpo.report.thumbnails import encode, weaken

from .conftest import HOSTILE, edit_results, write_jsonl
from .pages import find_table, parse_report

SECTIONS = ("headline", "overview", "pairs", "data", "training", "evaluation")


def _strip_marks(fragment: str) -> str:
    return html.unescape(re.sub(r"</?(?:ins|del)>", "", fragment))


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = write_report(tiny_run, tmp_path_factory.mktemp("report") / "report.html")
    return out.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- word diff


def test_word_diff_marks_what_the_rejected_response_changed() -> None:
    chosen_html, rejected_html = word_diff(
        "A cat looks to the left.", "A cat looks at a mouse & a <bowl>."
    )
    assert chosen_html == "A cat looks <del>to the left</del>."
    assert rejected_html == "A cat looks <ins>at a mouse &amp; a &lt;bowl&gt;</ins>."


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_word_diff_keeps_both_texts_exactly(chosen: str, rejected: str) -> None:
    chosen_html, rejected_html = word_diff(chosen, rejected)
    assert _strip_marks(chosen_html) == chosen
    assert _strip_marks(rejected_html) == rejected
    assert "<" not in re.sub(r"</?(?:ins|del)>", "", chosen_html + rejected_html)


# --------------------------------------------------------------------------- sampling


def test_bottom_k_sample_is_bounded_seeded_and_order_free() -> None:
    records = [(f"strategy-{i % 3}", f"pair-{i}") for i in range(3000)]

    def sample(rows: list[tuple[str, str]], seed: int) -> dict[str, list[str]]:
        sampler = BottomKSampler(7, seed=seed)
        for strategy, record_id in rows:
            sampler.add(strategy, record_id, record_id)
        return sampler.sample()

    first = sample(records, seed=0)
    assert {name: len(ids) for name, ids in first.items()} == {f"strategy-{i}": 7 for i in range(3)}
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert sample(shuffled, seed=0) == first
    assert sample(records, seed=1) != first
    for name, ids in first.items():
        assert all(int(i.split("-")[1]) % 3 == int(name.split("-")[1]) for i in ids)


# --------------------------------------------------------------------------- the tiny run


def test_report_has_every_section_and_escapes_records(report: str) -> None:
    for section in SECTIONS:
        assert f'<section class="part" id="{section}">' in report
    assert "<script" not in report.lower()
    assert html.escape(HOSTILE).split(" on a pad")[0].split("A rocket ")[1] in report
    assert 'src="http' not in report and "src='http" not in report


def test_gallery_shows_each_kept_pair_with_the_weakened_image_made_again(
    report: str, tiny_run: Path
) -> None:
    page = parse_report(report)
    pairs = [json.loads(line) for line in (tiny_run / "pairs.jsonl").read_text().splitlines()]
    cards = {card.header.split(" · ")[0]: card for card in page.cards}
    assert {pair["id"] for pair in pairs} <= set(cards)
    negatives = {
        row["id"]: row
        for path in sorted((tiny_run / "negatives").glob("*.jsonl"))
        for row in map(json.loads, path.read_text().splitlines())
    }
    for pair in pairs:
        card = cards[pair["id"]]
        original = load_image(pair["image"], tiny_run / "data" / "images")
        assert card.images["original image"] == encode(original).uri
        distortion = negatives[pair["id"]]["params"].get("distortion")
        weakened = [src for alt, src in card.images.items() if alt.startswith("weakened image")]
        if distortion is None:
            assert weakened == []
        else:
            # bpo.distort is deterministic: the page shows the very image the model saw.
            assert weakened == [encode(weaken(original, distortion)).uri]
            assert f"seed {distortion['seed']}" in next(
                alt for alt in card.images if alt.startswith("weakened")
            )


def test_every_strategys_gallery_is_open(report: str) -> None:
    galleries = re.findall(r'<details class="strategy" [^>]*data-strategy="([^"]+)" open>', report)
    assert galleries == ["cooccurrence", "image-weakening"]
    # Each strategy's first page is the one shown without a target (see html.STYLE).
    firsts = re.findall(r'<div class="gallery-page first" [^>]*data-strategy="([^"]+)"', report)
    assert firsts == galleries


def test_data_section_counts_kept_and_dropped_as_the_stats_file(
    report: str, tiny_run: Path
) -> None:
    stats = json.loads((tiny_run / "pairs.stats.json").read_text())
    rows = find_table(parse_report(report), "strategy", "kept")
    header, body = rows[0], {row[0]: row for row in rows[1:]}
    assert set(body) == set(stats["strategies"])
    for name, entry in stats["strategies"].items():
        assert int(body[name][header.index("kept")]) == entry["kept"]
        for reason, count in entry["dropped"].items():
            column = f"dropped: {reason}"
            if column in header:
                assert int(body[name][header.index(column)]) == count
            else:
                assert all(e["dropped"][reason] == 0 for e in stats["strategies"].values())
    assert any(stats["dropped"].values())  # the fixture drops pairs: the table shows reasons


def test_missing_values_show_a_dash_never_a_question_mark(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # Results without counts, CHAIR captions without their objects, a distortion
    # without its seed, a stats entry without its negatives count.
    for path in (run / "eval").glob("*/results.json"):
        results = json.loads(path.read_text())
        results.pop("counts")
        for caption in results.get("details", {}).get("captions", []):
            caption.pop("objects", None)
        path.write_text(json.dumps(results))
    negatives = run / "negatives" / "image_weakening.jsonl"
    rows = [json.loads(line) for line in negatives.read_text().splitlines()]
    for row in rows:
        row["params"]["distortion"].pop("seed")
    write_jsonl(negatives, rows)
    stats = json.loads((run / "pairs.stats.json").read_text())
    del stats["strategies"]["cooccurrence"]["negatives"]
    (run / "pairs.stats.json").write_text(json.dumps(stats))
    edit_results(run, "bpo-chair", {"chair_s": None})

    page = write_report(run).read_text()
    text = parse_report(page).text  # records' prompts left out: they may ask questions
    assert "?" not in text and "None" not in text
    assert "seed not recorded" in text
    counts = find_table(parse_report(page), "strategy", "kept")
    assert next(row for row in counts if row[0] == "cooccurrence")[1] == "—"
    chair = {row[0]: row for row in find_table(parse_report(page), "metric", "bpo-chair")}
    assert chair["chair_s"][2:] == ["—", "—"]  # the value and the change


def test_training_table_has_first_and_last_values(report: str, tiny_run: Path) -> None:
    lines = [
        json.loads(line) for line in (tiny_run / "train/metrics.jsonl").read_text().splitlines()
    ]
    rows = find_table(parse_report(report), "run", "last")
    loss = next(row for row in rows if row[1] == "loss")
    assert float(loss[2]) == pytest.approx(lines[0]["loss"], rel=1e-3)
    assert float(loss[3]) == pytest.approx(lines[-1]["loss"], rel=1e-3)
    assert int(loss[4]) == lines[-1]["step"]


# --------------------------------------------------------------------------- subsets and limits


def test_any_subset_of_stages_makes_a_report(tiny_run: Path, tmp_path: Path) -> None:
    only_training = tmp_path / "only-training"
    shutil.copytree(tiny_run / "train", only_training / "train")
    page = write_report(only_training).read_text()
    assert "rewards/margins" in page.split('id="training"')[1]
    assert "No pairs found" in page and "No evaluation results found" in page

    # Negatives and samples but no pairs yet: the gallery joins them itself.
    no_pairs = tmp_path / "no-pairs"
    shutil.copytree(tiny_run / "data", no_pairs / "data")
    shutil.copytree(tiny_run / "negatives", no_pairs / "negatives")
    cards = parse_report(write_report(no_pairs).read_text()).cards
    negatives = [
        json.loads(line)
        for path in (no_pairs / "negatives").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert {card.header.split(" · ")[0] for card in cards} == {row["id"] for row in negatives}

    # Only evaluation results: still a run (the training section says what it lacks).
    only_eval = tmp_path / "only-eval"
    shutil.copytree(tiny_run / "eval", only_eval / "eval")
    assert "No training metrics found" in write_report(only_eval).read_text()


def _not_a_run(path: Path, kind: str) -> None:
    if kind == "empty":
        path.mkdir()
    elif kind == "images-and-recipe":  # neither is a stage's output
        (path / "data" / "images").mkdir(parents=True)
        (path / "config.yaml").write_text("seed: 0\n")
    elif kind == "file":
        path.write_text("not a folder")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "is not a bpo run: no samples, negatives, pairs"),
        ("images-and-recipe", "is not a bpo run"),
        ("file", "is a file, not a run folder"),
        ("missing", "run folder not found"),
    ],
)
def test_a_folder_that_is_no_run_is_refused_in_one_line_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    target = tmp_path / "target"
    _not_a_run(target, kind)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match=message):
        write_report(target)
    assert main(["report", str(target), "--out", str(tmp_path / "report.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bpo report: error: ") and message in err and str(target) in err
    assert err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before  # no report, no temporary file


def test_gallery_respects_its_sample_size_and_byte_budget(tiny_run: Path, tmp_path: Path) -> None:
    def cards(options: ReportOptions) -> list[str]:
        page = write_report(tiny_run, tmp_path / "r.html", options=options).read_text()
        return re.findall(r'<article class="pair" .*?</article>', page)

    whole = cards(ReportOptions())
    assert len(whole) == len((tiny_run / "pairs.jsonl").read_text().splitlines())
    one_each = cards(ReportOptions(pairs_per_strategy=1))
    assert sorted(re.search(r'data-strategy="([^"]+)"', c)[1] for c in one_each) == [
        "cooccurrence",
        "image-weakening",
    ]
    # Cards are added until the next would pass the budget.
    budget = sum(len(card) for card in whole) - 1
    assert len(cards(ReportOptions(max_gallery_bytes=budget))) == len(whole) - 1
    assert cards(ReportOptions(max_gallery_bytes=0)) == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


def test_bad_records_are_skipped_by_default_and_raised_on_demand(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report.html"))
    with open(run / "pairs.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "torn", "image": "chel')  # a write killed mid-line
    assert main(["report", str(run), "--out", str(tmp_path / "a.html")]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 record (bad-json 1)" in captured.err
    assert "bad-json 1" in (tmp_path / "a.html").read_text()
    assert main(["report", str(run), "--out", str(tmp_path / "b.html"), "--on-error", "raise"]) == 2
    lines = len((run / "pairs.jsonl").read_text().splitlines())
    assert f"pairs.jsonl:{lines}: malformed JSON" in capsys.readouterr().err
    assert not (tmp_path / "b.html").exists()
    with pytest.raises(RecordError):
        write_report(run, tmp_path / "c.html", policy=ErrorPolicy(on_error="raise"))


def test_long_texts_are_cut(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "data", run / "data")
    pair = json.loads((tiny_run / "pairs.jsonl").read_text().splitlines()[0])
    pair["rejected"] = "word " * 200_000  # 1 MB of text in one record
    write_jsonl(run / "pairs.jsonl", [pair])
    out = write_report(run)
    assert out.stat().st_size < 300_000
    assert "more characters]" in out.read_text()

"""A negative's provenance as one `key: value` line, from the params bpo's strategies write."""

from __future__ import annotations

from pathlib import Path

from bpo.distort import describe
from bpo.report import write_report
from bpo.report.provenance import provenance_items, provenance_line

from .conftest import HOSTILE
from .pages import parse_report


def test_image_weakening_params_read_as_the_issue_asks() -> None:
    params = {
        "backend": "hf",
        "model": "llava-hf/llava-1.5-7b-hf",
        "distortion": describe("diffusion", {"step": 500}, seed=0),
        "temperature": 1.0,
        "top_p": None,
        "max_new_tokens": 256,
        "seed": 0,  # the same seed as the distortion's: said once
    }
    assert provenance_line(params, 600) == (
        "model: llava-hf/llava-1.5-7b-hf · distortion: diffusion · step: 500 · seed: 0"
        " · backend: hf · temperature: 1 · max_new_tokens: 256"
    )


def test_a_nested_key_that_differs_from_a_top_level_one_is_named_by_its_parent() -> None:
    params = {"distortion": describe("blur", {"radius": 2.5}, seed=7), "seed": 3}
    assert provenance_items(params) == [
        ("distortion", "blur"), ("radius", "2.5"), ("distortion seed", "7"), ("seed", "3"),
    ]  # fmt: skip


def test_cooccurrence_params_lists_and_substitutions() -> None:
    params = {
        "operations": ["insert", "substitute"],
        "edits": [{"op": "insert", "object": "clock", "anchor": "spoon"}],
        "inserted": ["clock"],
        "substituted": [{"from": "cat", "to": "dog"}],
        "association": "conditional-probability",
        "min_count": 2,
        "seed": 0,
        "sample_seed": 1079175070,
        "dry_run": False,
    }
    assert dict(provenance_items(params)) == {
        "operations": "insert, substitute",
        "edits": "op=insert object=clock anchor=spoon",
        "inserted": "clock",
        "substituted": "cat → dog",
        "association": "conditional-probability",
        "min_count": "2",
        "seed": "0",
        "sample_seed": "1079175070",
        "dry_run": "false",
    }


def test_the_line_is_escaped_and_cut() -> None:
    line = provenance_line({"model": HOSTILE, "note": "x" * 1000}, 200)
    assert "<script" not in line and "&lt;script&gt;" in line
    assert line.endswith("more characters]") and len(line) < 400


def test_cards_show_provenance_as_a_line_not_json(tiny_run: Path, tmp_path: Path) -> None:
    page = parse_report(write_report(tiny_run, tmp_path / "r.html").read_text())
    weakening = [card for card in page.cards if "· image-weakening" in card.header]
    assert weakening
    for card in weakening:
        assert "model: tiny-llava · distortion: diffusion · step: 700 · seed: " in card.header
        assert "{" not in card.header and '"' not in card.header

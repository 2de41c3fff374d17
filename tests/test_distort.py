"""Tests of bpo.distort and `bpo distort`."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from bpo.cli import main
from bpo.commands.distort import safe_name
from bpo.distort import (
    DISTORTIONS,
    describe,
    diffusion,
    diffusion_noise_array,
    diffusion_schedule,
    distort,
    output_tag,
    parse_params,
    preview_grid,
)
from bpo.errors import ConfigError

RANDOM_KINDS = [name for name, d in DISTORTIONS.items() if d.random]


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


@pytest.fixture(scope="module")
def small_photo() -> Image.Image:
    # A real photo, small so the CLI tests stay fast.
    return Image.fromarray(skdata.chelsea()).resize((96, 64))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


# --------------------------------------------------------------------------- schedule


def test_schedule_matches_an_independent_product_and_decreases():
    abar = diffusion_schedule()
    assert abar.shape == (1000,)
    assert diffusion_schedule() is abar  # cached
    assert not abar.flags.writeable
    # Recomputed term by term with math, the release's formula written out.
    product, expected = 1.0, []
    for i in range(1000):
        x = -6.0 + 12.0 * i / 999
        beta = 1.0 / (1.0 + math.exp(-x)) * (5e-3 - 1e-5) + 1e-5
        product *= 1.0 - beta
        expected.append(product)
    np.testing.assert_allclose(abar, expected, rtol=1e-10)
    assert np.all(np.diff(abar) < 0)
    assert 1 - abar[0] < 3e-5  # t = 0 adds almost no noise
    assert 0.05 < abar[-1] < 0.1  # t = 999 keeps under a tenth of the signal power


@pytest.mark.parametrize("step", [100, 500, 900])
def test_noise_follows_the_closed_form(step):
    # x0 = 0.2 everywhere in [-1, 1]-space: pixel 153 = (0.2 + 1) * 127.5 exactly.
    image = Image.new("RGB", (256, 256), (153, 153, 153))
    noised = diffusion_noise_array(image, step, seed=1234).astype(np.float64)
    n = noised.size  # 196,608 independent draws
    abar = diffusion_schedule()[step]
    mean, sigma = math.sqrt(abar) * 0.2, math.sqrt(1 - abar)
    # Five standard errors: sigma / sqrt(n) for the mean, about sigma / sqrt(2n) for the
    # standard deviation of a normal sample; a correct implementation fails with p < 1e-6.
    assert abs(noised.mean() - mean) < 5 * sigma / math.sqrt(n)
    assert abs(noised.std() - sigma) < 5 * sigma / math.sqrt(2 * n)


def test_image_is_the_clipped_rounded_array(astronaut):
    noised = diffusion_noise_array(astronaut, 700, seed=3)
    assert noised.min() < -1 and noised.max() > 1  # the array is taken before clipping
    expected = np.clip(np.rint((noised + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(diffusion(astronaut, step=700, seed=3)), expected)


def test_step_zero_is_nearly_the_identity(astronaut):
    diff = np.abs(pixels(distort(astronaut, step=0, seed=0)) - pixels(astronaut))
    # sqrt(1 - abar_0) * 127.5 ~ 0.6 grey levels of noise.
    assert diff.mean() < 0.6
    assert diff.max() <= 4


def test_more_steps_weaken_more(astronaut):
    distances = [
        np.abs(pixels(distort(astronaut, step=t, seed=0)) - pixels(astronaut)).mean()
        for t in (100, 500, 900)
    ]
    assert distances == sorted(distances)
    assert distances[-1] > 3 * distances[0]


# --------------------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_each_distortion_changes_a_real_photo(astronaut, kind):
    before = np.asarray(astronaut).copy()
    out = distort(astronaut, kind, seed=5)
    assert out.mode == "RGB" and out.size == astronaut.size
    assert np.asarray(out).dtype == np.uint8
    assert np.abs(pixels(out) - before).mean() > 1.0
    np.testing.assert_array_equal(np.asarray(astronaut), before)  # the input is untouched


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_same_seed_same_bytes_and_no_global_state(small_photo, kind):
    np.random.seed(0)
    first = distort(small_photo, kind, seed=7).tobytes()
    np.random.seed(1)  # the global generator must not matter
    state = np.random.get_state()[1].copy()
    assert distort(small_photo, kind, seed=7).tobytes() == first
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # nor be consumed


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_different_seed_different_image(astronaut, kind):
    assert distort(astronaut, kind, seed=1).tobytes() != distort(astronaut, kind, seed=2).tobytes()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_any_mode_in_rgb_out(small_photo, mode):
    out = distort(small_photo.convert(mode), "blur")
    assert out.mode == "RGB" and out.size == small_photo.size


def test_strength_parameters_weaken_monotonically(astronaut):
    def distance(kind: str, **params: float) -> float:
        return float(np.abs(pixels(distort(astronaut, kind, **params)) - pixels(astronaut)).mean())

    for kind, name, values in [
        ("blur", "radius", (1.0, 4.0, 16.0)),
        ("downsample", "factor", (2.0, 8.0, 32.0)),
        ("mask", "fraction", (0.1, 0.3, 0.6)),
    ]:
        distances = [distance(kind, **{name: v}) for v in values]
        assert distances == sorted(distances), (kind, distances)
    # At the neutral value the deterministic ones give the image back.
    assert distance("blur", radius=0.0) == 0.0
    assert distance("mask", fraction=0.0) == 0.0
    assert distance("crop", scale=1.0) == 0.0


def test_mask_greys_the_requested_fraction(astronaut):
    out = np.asarray(distort(astronaut, "mask", fraction=0.25, seed=2))
    grey = np.all(out == 128, axis=-1).mean()
    assert 0.24 < grey < 0.27  # the rectangle, plus the few grey pixels of the photo


# --------------------------------------------------------------------------- validation


def test_unknown_kind_lists_the_valid_ones(small_photo):
    with pytest.raises(ConfigError) as error:
        distort(small_photo, "sharpen")
    for name in DISTORTIONS:
        assert name in str(error.value)


def test_unknown_param_lists_the_valid_ones(small_photo):
    with pytest.raises(ConfigError, match=r"valid: brightness, contrast, saturation, hue"):
        distort(small_photo, "jitter", radius=2)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("diffusion", {"step": 1000}),
        ("diffusion", {"step": -1}),
        ("diffusion", {"step": 2.5}),
        ("diffusion", {"step": True}),
        ("blur", {"radius": -1.0}),
        ("blur", {"radius": float("nan")}),
        ("downsample", {"factor": 0.5}),
        ("jitter", {"hue": 0.6}),
        ("crop", {"scale": 0.0}),
        ("mask", {"fraction": 1.5}),
        ("blur", {"radius": "4"}),
    ],
)
def test_bad_values_are_refused(small_photo, kind, params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        distort(small_photo, kind, **params)


def test_step_error_names_the_range(small_photo):
    with pytest.raises(ConfigError, match=r"\[0, 999\]"):
        distort(small_photo, step=1000)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed_is_refused(small_photo, seed):
    with pytest.raises(ConfigError, match="seed"):
        distort(small_photo, seed=seed)


def test_describe_gives_every_param_and_is_json():
    provenance = describe("jitter", {"hue": 0.2}, seed=3)
    assert provenance == {
        "kind": "jitter",
        "params": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2},
        "seed": 3,
    }
    assert json.loads(json.dumps(provenance)) == provenance
    assert describe("diffusion")["params"] == {"step": 500}
    assert describe("blur", {"radius": 2})["params"]["radius"] == 2.0  # typed as declared


def test_parse_params_and_output_tag():
    assert parse_params("blur", ["radius=2.5"]) == {"radius": 2.5}
    assert parse_params("diffusion", ["step=700"]) == {"step": 700}
    for bad in (["radius"], ["radius=x"], ["radius=1", "radius=2"], ["sigma=1"]):
        with pytest.raises(ConfigError):
            parse_params("blur", bad)
    assert output_tag("diffusion", {"step": 700}, seed=2) == "diffusion-step700-seed2"
    assert output_tag("blur", {"radius": 2}, seed=2) == "blur-radius2"  # the seed changes nothing


def test_preview_grid_has_one_labelled_cell_per_setting(astronaut):
    grid = preview_grid(astronaut, "diffusion", seed=0, width=64)
    cells = len(DISTORTIONS["diffusion"].preview)
    assert cells == 7
    assert grid.size == (cells * (64 + 8) + 8, 64 + 32 + 8)
    label_strip = np.asarray(grid)[:32]
    assert (label_strip < 128).any()  # the labels are drawn


# --------------------------------------------------------------------------- CLI


def test_safe_name_is_portable_and_distinct():
    assert safe_name("cat") == "cat"
    names = {safe_name(n) for n in ("a/b", "a_b", "a b", "../a/b")}
    assert len(names) == 4
    for name in names:
        assert "/" not in name and not name.startswith(".")


def test_cli_on_an_image_file(tmp_path, small_photo, capsys):
    pytest.importorskip("bpo.data.images")
    source = tmp_path / "cat photo.png"
    small_photo.save(source)
    out = tmp_path / "out"
    argv = ["distort", str(source), "--step", "700", "--seed", "3", "--out", str(out)]
    assert main([*argv, "--preview"]) == 0

    (written,) = out.glob("*.diffusion-step700-seed3.png")
    assert written.name.startswith("cat_photo")
    expected = distort(small_photo, step=700, seed=3)
    with Image.open(written) as image:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
    lines = (out / "distortions.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["source"] == str(source)
    assert entry["output"] == written.name
    assert entry["provenance"] == describe("diffusion", {"step": 700}, seed=3)
    with Image.open(out / "preview-diffusion.png") as grid:
        assert grid.width > 7 * small_photo.width and grid.height > small_photo.height

    # A re-run finds the output and writes nothing new.
    assert main(argv) == 0
    assert "1 already there" in capsys.readouterr().err
    assert len((out / "distortions.jsonl").read_text().splitlines()) == 1


def test_cli_param_for_another_kind(tmp_path, small_photo):
    pytest.importorskip("bpo.data.images")
    source = tmp_path / "cat.png"
    small_photo.save(source)
    out = tmp_path / "out"
    assert (
        main(["distort", str(source), "--kind", "blur", "--param", "radius=3", "--out", str(out)])
        == 0
    )
    assert (out / "cat.blur-radius3.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "sharpen"], "valid: diffusion, blur"),
        (["--kind", "blur", "--step", "500"], "--step applies to diffusion"),
        (["--step", "1000"], r"\[0, 999\]"),
        (["--param", "radius=2"], "valid: step"),
    ],
)
def test_cli_refuses_bad_options(tmp_path, small_photo, capsys, extra, message):
    source = tmp_path / "cat.png"
    small_photo.save(source)
    assert main(["distort", str(source), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert re.search(message, err)


def test_cli_missing_input(tmp_path, capsys):
    assert main(["distort", str(tmp_path / "nope.png"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_on_a_records_file(tmp_path, small_photo):
    pytest.importorskip("bpo.data.formats")
    from bpo.data.records import Sample

    root = tmp_path / "images"
    root.mkdir()
    small_photo.save(root / "cat.png")
    prompt = [{"role": "user", "content": "What is in the image?"}]
    samples = [
        Sample(id="coco/1", image="cat.png", prompt=prompt, response="A cat."),
        Sample(id="coco/2", image="missing.png", prompt=prompt, response="A dog."),
        Sample(id="coco/3", image=None, prompt=prompt, response="Hello."),
    ]
    records = tmp_path / "samples.jsonl"
    records.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples))
    out = tmp_path / "out"
    argv = ["distort", str(records), "--image-root", str(root), "--out", str(out)]
    assert main([*argv, "--on-error", "skip", "--step", "300", "--preview"]) == 0

    entries = [json.loads(line) for line in (out / "distortions.jsonl").read_text().splitlines()]
    assert [e["sample_id"] for e in entries] == ["coco/1"]
    assert (out / entries[0]["output"]).is_file()
    assert "/" not in entries[0]["output"]
    assert (out / "preview-diffusion.png").is_file()
    skipped = json.loads((out / "skipped.json").read_text())
    assert skipped["total"] == 1
    assert skipped["skipped"][0]["record_id"] == "coco/2"

    # With --on-error raise the missing image stops the run with a clear error.
    assert main([*argv, "--step", "300"]) == 2

"""Night infrared and info strips judged from the pixels, through the daemon's own decode step."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from daemon.cli import main
from daemon.config import Config, ConfigError, parse_config
from daemon.config_strips import CameraStrips, Strips
from daemon.decode.jobs import DecodeJob, DecodeOutcome, decode_job
from daemon.decode.light import is_infrared, mean_chroma
from daemon.decode.strips import Strips as StripRows
from daemon.decode.strips import find_strips
from tests.clip_spec import CLIP_SPEC
from tests.daemon_support import daemon_thread, make_station, query, settled, wait_until

ORIENTATION = 0x0112
TIGER = "tiger/anno_1440.jpg"

# What a person sees in each sample (looked at one by one): grey (infrared) content, and an info
# strip at the top, at the bottom. Grey means what the infrared prompts suit: the true mode-L
# black-and-white elephants are grey too. ocelot.jpg is a scanned white-flash print in colour;
# its scanner border is no camera strip. The serengeti frame's date and logo are boxes pasted in
# the picture's corners, not a full-width band.
SAMPLE_FRAMES = [
    ("edge_cases/african_elephants_bw.jpg", True, False, True),
    ("edge_cases/african_elephants_cmyk.jpg", False, False, True),
    ("edge_cases/african_elephants_with_exif_orientation.jpg", False, False, True),
    ("edge_cases/channel_islands_camera_traps_loc-h500ee05127658_007_194.jpg", False, True, True),
    ("edge_cases/sage-grouse-raw.jpg", False, False, True),
    ("empty/blank.jpg", False, True, True),
    ("empty/blank2.jpg", False, False, True),
    ("empty/blank3.jpg", True, False, True),
    ("empty/empty.jpg", True, True, True),
    ("night_ir/american_black_bear.jpg", True, True, True),
    ("night_ir/channel-islands-thumb.jpg", True, True, True),
    ("night_ir/channel_islands_camera_traps_loc-h500ee07133550_010_643.jpg", True, True, True),
    (
        "night_ir/island_conservation_camera_traps_palau_cam10a_cam10a12122018_palau_cam10a"
        "12122018_20181108_174532_rcnx1035.jpg",
        True,
        True,
        True,
    ),
    ("night_ir/missouri_camera_traps_Set1_1.02-Agouti_SEQ89823_SEQ89823_IMG_0002.JPG", *[True] * 3),
    ("night_ir/orinoquia-thumb-web.jpg", True, False, True),
    ("other_animal/S1_D04_R6_PICT0128.JPG", False, False, True),
    ("other_animal/african_elephants.jpg", False, False, True),
    ("other_animal/domestic_dog.jpg", False, True, True),
    ("other_animal/idaho-camera-traps.jpg", False, True, True),
    ("other_animal/nacti.jpg", False, True, True),
    ("other_animal/ocelot.jpg", False, False, False),
    (
        "other_animal/snapshot_enonkishu_ENO_S1_B05_B05_R2_ENO_S1_B05_R2_IMAG0624.JPG",
        False,
        False,
        True,
    ),
    ("other_animal/snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG", False, False, True),
    ("other_animal/snapshot_serengeti_S5_U10_U10_R4_S5_U10_R4_IMAG3595.JPG", False, False, False),
    ("other_animal/wcs_camera_traps_animals_0090_1439.jpg", False, True, True),
    ("tiger/anno_1440.jpg", False, False, False),
]


def decoded(path: Path, strips: Strips | None = None) -> DecodeOutcome:
    """The daemon's decode job for `path`, at the draft scale the 224-pixel model asks for."""
    job = DecodeJob(
        path=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        formats=("JPEG", "MPO", "PNG", "WEBP"),
        max_pixels=120_000_000,
        draft_size=224,
        spec=CLIP_SPEC,
        view="crops",
        strips=Strips() if strips is None else strips,
    )
    return decode_job(job)


# --- acceptance: the samples ----------------------------------------------------------------------


@pytest.mark.parametrize(("relative", "infrared", "top", "bottom"), SAMPLE_FRAMES)
def test_samples_light_and_strips(
    samples_dir: Path, relative: str, infrared: bool, top: bool, bottom: bool
) -> None:
    path = samples_dir / relative
    outcome = decoded(path)
    assert outcome.error is None and outcome.pixels is not None
    assert outcome.infrared is infrared
    with Image.open(path) as image:
        turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
        height = image.size[0] if turned else image.size[1]
    for found, expected in ((outcome.strip_top, top), (outcome.strip_bottom, bottom)):
        if expected:
            # Every sample camera's strip is 1-10% of the frame's height.
            assert 0.01 * height <= found <= 0.1 * height, (found, height)
        else:
            assert found == 0


def test_every_listed_sample_is_labelled(samples_dir: Path) -> None:
    on_disk = {
        str(path.relative_to(samples_dir))
        for path in samples_dir.rglob("*")
        if path.suffix.lower() == ".jpg"
    }
    labelled = {relative for relative, *_ in SAMPLE_FRAMES}
    # The truncated file does not decode: it has no light and no strips (it is quarantined).
    assert on_disk - labelled == {"edge_cases/african_elephants_truncated_file.jpg"}


def test_the_truncated_sample_has_no_light(samples_dir: Path) -> None:
    outcome = decoded(samples_dir / "edge_cases/african_elephants_truncated_file.jpg")
    assert outcome.error is not None and "truncated" in outcome.error
    assert outcome.pixels is None


def test_the_orange_logo_in_the_strip_is_cut_before_the_light_is_judged(
    samples_dir: Path,
) -> None:
    path = samples_dir / "night_ir/orinoquia-thumb-web.jpg"
    with Image.open(path) as image:
        whole = np.asarray(image.convert("RGB"))
    cut = decoded(path)
    assert cut.infrared is True
    assert cut.strip_bottom > 0
    picture, strip = whole[: -cut.strip_bottom], whole[-cut.strip_bottom :]
    assert mean_chroma(strip) > 5 * mean_chroma(picture)  # the logo is colour
    chroma = whole.max(axis=2).astype(int) - whole.min(axis=2)
    assert chroma.max() > 100  # a maximum would call the frame colour ...
    assert is_infrared(whole)  # ... a mean, strip and all, still sees grey


# --- built frames ---------------------------------------------------------------------------------


def scene(size: tuple[int, int] = (640, 480), *, seed: int = 0, grey: bool = False) -> Image.Image:
    """Smooth random content (colour, or grey stored as RGB), darker than any strip's white."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 190, (height // 16, width // 16, 3), dtype=np.uint8)
    if grey:
        coarse[:] = coarse[:, :, :1]
    return Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR)


def with_band(
    image: Image.Image, rows: int, *, bottom: bool = True, level: int = 0, ink: int = 255
) -> Image.Image:
    """`image` with a full-width band of `rows` at `level`, a date and a temperature on it."""
    framed = image.copy()
    top = image.height - rows if bottom else 0
    draw = ImageDraw.Draw(framed)
    draw.rectangle((0, top, image.width, top + rows - 1), fill=(level,) * 3)
    font = ImageFont.load_default(size=int(rows * 0.6))
    fill = (ink,) * 3
    draw.text((8, top + rows * 0.2), "2024-05-06 07:08:09 PM  M 1/3", fill=fill, font=font)
    draw.text((image.width * 0.75, top + rows * 0.2), "23C", fill=fill, font=font)
    return framed


def saved(image: Image.Image, path: Path, **params: Any) -> Path:
    image.save(path, "JPEG", quality=90, **params)
    return path


def test_a_dark_band_with_white_text_at_the_bottom_is_a_strip(tmp_path: Path) -> None:
    frame = with_band(scene(), 28)
    assert find_strips(np.asarray(frame)) == StripRows(top=0, bottom=28)
    outcome = decoded(saved(frame, tmp_path / "band.jpg"))  # draft-decoded at half scale
    assert outcome.strip_top == 0
    assert abs(outcome.strip_bottom - 28) <= 2


def test_a_white_band_with_dark_text_and_a_coloured_logo_at_the_bottom_is_a_strip() -> None:
    frame = with_band(scene(seed=1), 32, level=255, ink=0)
    ImageDraw.Draw(frame).rectangle((0, 448, 40, 479), fill=(230, 90, 20))  # the vendor's logo
    assert find_strips(np.asarray(frame)) == StripRows(top=0, bottom=32)


def test_a_top_strip_next_to_a_dark_night_picture_is_cut_at_its_edge() -> None:
    night = Image.fromarray(np.full((480, 640, 3), 22, dtype=np.uint8))
    noisy = np.asarray(night).astype(int) + np.random.default_rng(2).integers(-8, 9, (480, 640, 1))
    frame = with_band(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), 20, bottom=False)
    assert find_strips(np.asarray(frame)).top == 20


def test_a_dark_sky_is_not_a_strip() -> None:
    frame = np.asarray(scene(seed=3)).copy()
    # A night sky over the top 30%: dark, smooth, full width, darkest at the edge.
    sky_rows = 144
    shade = np.linspace(4, 30, sky_rows, dtype=np.float64)[:, np.newaxis, np.newaxis]
    frame[:sky_rows] = (shade * np.array([0.8, 0.9, 1.0])).astype(np.uint8)
    assert find_strips(frame).top == 0
    # A black sky ending at a sharp horizon within a strip's height: uniform, but no text on it.
    frame[:sky_rows] = np.asarray(scene(seed=4))[:sky_rows]
    frame[:30] = 2
    assert find_strips(frame).top == 0


def test_date_boxes_in_the_corners_are_not_a_strip() -> None:
    frame = scene(seed=5)
    draw = ImageDraw.Draw(frame)
    for left in (0, 500):
        draw.rectangle((left, 452, left + 139, 479), fill=(255, 255, 255))
        draw.text((left + 6, 456), "12.17.2012", fill=(0, 0, 0))
    assert find_strips(np.asarray(frame)) == StripRows(top=0, bottom=0)


def test_grey_content_with_a_green_logo_in_its_strip_is_infrared(tmp_path: Path) -> None:
    frame = with_band(scene(seed=6, grey=True), 24)
    ImageDraw.Draw(frame).rectangle((560, 460, 630, 475), fill=(20, 160, 40))
    night = decoded(saved(frame, tmp_path / "night.jpg"))
    day = decoded(saved(with_band(scene(seed=6), 24), tmp_path / "day.jpg"))
    assert (night.infrared, day.infrared) == (True, False)
    assert night.strip_bottom > 0 and day.strip_bottom > 0


# --- configuration --------------------------------------------------------------------------------


def reconyx_frame(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "RECONYX"
    exif[0x0110] = "HC600 HYPERFIRE\x00\x00\x00"
    return saved(with_band(scene(seed=7), 28), path, exif=exif)


def test_a_camera_with_fixed_shares_is_cut_as_configured(tmp_path: Path) -> None:
    rule = CameraStrips(camera="RECONYX  HC600 Hyperfire", top=0.1, bottom=0.05)
    outcome = decoded(reconyx_frame(tmp_path / "r.jpg"), Strips(cameras=(rule,)))
    assert (outcome.camera_make, outcome.camera_model) == ("reconyx", "hc600 hyperfire")
    assert (outcome.strip_top, outcome.strip_bottom) == (48, 24)


def test_detection_off_for_a_camera_or_for_all_cuts_nothing(tmp_path: Path) -> None:
    frame = reconyx_frame(tmp_path / "r.jpg")
    off_for_camera = Strips(cameras=(CameraStrips(camera="reconyx hc600 hyperfire"),))
    other_camera = Strips(cameras=(CameraStrips(camera="bushnell bs686bwn"),))
    assert decoded(frame, off_for_camera).strip_bottom == 0
    assert decoded(frame, Strips(detect=False)).strip_bottom == 0
    assert decoded(frame, other_camera).strip_bottom > 0
    on_for_camera = CameraStrips(camera="reconyx hc600 hyperfire", detect=True)
    assert decoded(frame, Strips(detect=False, cameras=(on_for_camera,))).strip_bottom > 0


def config_with(tmp_path: Path, strips: object) -> Config:
    folders = ("inbox", "review", "archive", "quarantine")
    paths = {key: str(tmp_path / key) for key in folders}
    return parse_config({"paths": paths, "strips": strips}, source=tmp_path / "c.yaml")


def test_strips_section_is_read_with_camera_names_normalised(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, {"cameras": [{"camera": "  RECONYX   HC500 HYPERFIRE ", "top": 0.03}]}
    )
    assert config.strips.detect is True
    rule = config.strips.rule_for("reconyx hc500 hyperfire")
    assert rule == CameraStrips(camera="reconyx hc500 hyperfire", top=0.03)


@pytest.mark.parametrize(
    ("cameras", "message"),
    [
        (
            [{"camera": "a", "top": 0.1}, {"camera": "A ", "detect": False}],
            "strips.cameras[1].camera: 'a' is listed twice",
        ),
        ([{"camera": "a", "detect": True, "bottom": 0.1}], "strips.cameras[0].detect: give either"),
        ([{"camera": "a", "top": 0.5}], "strips.cameras[0].top: must be less than 0.5"),
        ([{"camera": "a", "top": 0.3, "bottom": 0.3}], "strips.cameras[0].bottom: top and"),
        ([{"camera": "  ", "top": 0.1}], "strips.cameras[0].camera: must not be empty"),
    ],
)
def test_strips_mistakes_are_reported_with_their_key(
    tmp_path: Path, cameras: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_with(tmp_path, {"cameras": cameras})
    assert message in str(raised.value)


# --- the daemon records what classify prints ------------------------------------------------------

END_TO_END = {
    "night_ir/channel-islands-thumb.jpg": (True, "reconyx", "hc500 hyperfire"),
    "other_animal/nacti.jpg": (False, "reconyx", "hc550 hyperfire"),
    "tiger/anno_1440.jpg": (False, None, None),
}


def test_the_daemon_records_light_strips_and_camera_as_classify_prints_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path, samples_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    frames = [samples_dir / relative for relative in END_TO_END]
    capsys.readouterr()
    assert main(["classify", "-c", str(station.config_path), "--json", *map(str, frames)]) == 0
    printed = {Path(result["path"]).name: result for result in json.loads(capsys.readouterr().out)}
    with daemon_thread(station):
        for frame in frames:
            shutil.copy(frame, station.inbox / frame.name)
        wait_until(lambda: settled(station) and len(stored(station)) == 3, "3 frames classified")

    for name, infrared, top, bottom, make, model in stored(station):
        relative = next(key for key in END_TO_END if key.endswith(str(name)))
        assert (bool(infrared), make, model) == END_TO_END[relative]
        assert (bool(infrared), top, bottom) == (
            printed[str(name)]["infrared"],
            printed[str(name)]["strip_top"],
            printed[str(name)]["strip_bottom"],
        )
    assert sorted(bool(top) for _, _, top, *_ in stored(station)) == [False, True, True]


def stored(station: Any) -> list[tuple[object, ...]]:
    return query(
        station,
        "SELECT original_name, infrared, strip_top, strip_bottom, camera_make, camera_model "
        "FROM images WHERE infrared IS NOT NULL",
    )


def test_classify_text_says_the_light_and_the_strips_cut(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path, samples_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    night, day = (samples_dir / "night_ir/channel-islands-thumb.jpg", samples_dir / TIGER)
    outcome = decoded(night)
    capsys.readouterr()
    assert main(["classify", "-c", str(station.config_path), str(night), str(day)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    top, bottom = outcome.strip_top, outcome.strip_bottom
    assert f"frame: infrared (grey); info strips cut: top {top} px, bottom {bottom} px" in lines
    assert "frame: colour; info strips cut: none" in lines

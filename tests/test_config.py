"""Tests for daemon.config: the example file, every kind of error message, path resolution."""

import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pydantic
import pytest
import yaml

from daemon.config import (
    DEFAULT_LABELS,
    Config,
    ConfigError,
    Database,
    Decision,
    Images,
    Label,
    Logging,
    Model,
    Watch,
    Worker,
    load_config,
    parse_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "config.example.yaml"


def minimal_config() -> dict[str, Any]:
    return {
        "paths": {
            "inbox": "inbox",
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
        }
    }


def write_config(folder: Path, data: object, name: str = "tigerwatch.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def problems_for(folder: Path, data: object) -> tuple[str, ...]:
    path = write_config(folder, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == path
    return caught.value.problems


# --- the example file ---------------------------------------------------------------------


def test_example_config_loads_with_documented_defaults() -> None:
    config = load_config(EXAMPLE)

    data = REPO_ROOT / "station-data"
    assert config.source == EXAMPLE
    assert config.station == "tigerwatch-station"
    assert [inbox.path for inbox in config.paths.inbox] == [data / "inbox"]
    assert not config.paths.inbox[0].polling
    assert config.paths.review == data / "review"
    assert config.paths.uncertain == data / "review" / "uncertain"
    assert config.paths.archive == data / "archive"
    assert config.paths.duplicates == data / "archive" / "duplicates"
    assert config.paths.quarantine == data / "quarantine"
    assert config.database.url == f"sqlite:///{data / 'tigerwatch.db'}"
    assert config.labels == DEFAULT_LABELS
    assert config.model == Model()
    assert config.decision == Decision()
    assert config.images == Images()
    assert config.watch == Watch()
    assert config.worker == Worker()
    assert config.logging == Logging()


def test_defaults_are_the_documented_values() -> None:
    assert Database().url == "sqlite:///tigerwatch.db"
    assert (Model().name_or_path, Model().batch_size, Model().precision) == (
        "openai/clip-vit-base-patch32",
        16,
        "auto",
    )
    assert (Model().device, Model().threads) == ("cpu", None)
    assert (Decision().positive_threshold, Decision().uncertain_threshold) == (0.5, 0.2)
    assert Images().formats == ("JPEG", "MPO", "PNG", "WEBP")
    assert Images().extensions == (".jpg", ".jpeg", ".png", ".webp")
    assert Images().max_pixels == 120_000_000
    assert (Watch().quiet_seconds, Watch().rescan_interval_seconds) == (5.0, 300.0)
    assert (Watch().health_check_seconds, Watch().ignore_patterns) == (10.0, ())
    assert (Worker().batch_max_wait_seconds, Worker().decode_processes) == (1.0, 2)
    assert (Worker().max_decode_attempts, Worker().retry_delay_seconds) == (3, 60.0)
    assert Logging().level == "INFO"
    assert Model().view == "crops"
    assert Decision().thresholds(infrared=True) == (0.5, 0.2)
    # The notebook's six labels, meaning kept; every one has infrared prompts of its own.
    assert [label.name for label in DEFAULT_LABELS] == [
        "Amur tiger",
        "Bengal tiger",
        "lion",
        "leopard",
        "domestic cat",
        "without a tiger",
    ]
    assert [label.name for label in DEFAULT_LABELS if label.target] == [
        "Amur tiger",
        "Bengal tiger",
    ]
    assert all(label.prompts and label.infrared_prompts for label in DEFAULT_LABELS)


def _model_classes(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    if get_origin(annotation) is None:
        return []
    return [model for arg in get_args(annotation) for model in _model_classes(arg)]


def _all_keys(model: type[pydantic.BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for nested in _model_classes(field.annotation):
            keys |= _all_keys(nested)
    return keys


def test_every_config_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = _all_keys(Config) - {"source"}  # source is set by the loader, never written in YAML

    assert {"inbox", "polling", "name", "prompts", "infrared_prompts", "target", "view"} <= keys
    assert "text:" in text  # the older label form is documented too
    undocumented = sorted(key for key in keys if not re.search(rf"\b{key}:", text))
    assert undocumented == []


def test_the_loader_fields_are_not_yaml_keys(tmp_path: Path) -> None:
    data = minimal_config() | {"source": "elsewhere.yaml"}

    problems = problems_for(tmp_path, data)

    assert problems == (f"{tmp_path / 'tigerwatch.yaml'}: source: unknown key (set by the loader)",)


# --- one problem per kind of mistake ------------------------------------------------------


def _set(data: dict[str, Any], dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


LABELS_WITH_EMPTY_TEXT = [
    {"text": "a tiger", "target": True},
    {"text": "a cat"},
    {"text": "   "},
]
NO_TARGET_LABELS = [{"text": "a tiger"}, {"text": "a cat"}]
DUPLICATE_LABELS = [
    {"text": "a tiger", "target": True},
    {"text": "A photo of a lion"},
    {"text": "a photo of a LION "},
]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("labels", LABELS_WITH_EMPTY_TEXT, "labels[2].text: must not be empty"),
        ("stationn", "x", "stationn: unknown key (did you mean 'station'?)"),
        ("model.batchsize", 8, "model.batchsize: unknown key (did you mean 'batch_size'?)"),
        ("model.batch_size", "lots", "model.batch_size: must be a whole number"),
        ("model.batch_size", 2.5, "model.batch_size: must be a whole number"),
        ("model.batch_size", 1000, "model.batch_size: must be at most 256"),
        ("model.batch_size", 0, "model.batch_size: must be at least 1"),
        ("model.threads", 0, "model.threads: must be at least 1"),
        ("model.precision", "fp16", "model.precision: must be one of auto, fp32, bf16, int8"),
        ("model.device", "gpu", "model.device: must be cpu, cuda, cuda:N or auto"),
        ("model.name_or_path", " ", "model.name_or_path: must not be empty"),
        ("station", "", "station: must not be empty"),
        ("station", 42, "station: must be text"),
        ("watch.quiet_seconds", "soon", "watch.quiet_seconds: must be a number"),
        ("watch.quiet_seconds", float("inf"), "watch.quiet_seconds: must be a finite number"),
        ("watch.quiet_seconds", -1, "watch.quiet_seconds: must be at least 0"),
        (
            "watch.rescan_interval_seconds",
            0,
            "watch.rescan_interval_seconds: must be greater than 0",
        ),
        (
            "watch.rescan_interval_seconds",
            7200,
            "watch.rescan_interval_seconds: must be at most 3600",
        ),
        ("watch.ignore_patterns", ["*.tmp", ""], "watch.ignore_patterns[1]: must not be empty"),
        ("worker.decode_processes", 64, "worker.decode_processes: must be at most 32"),
        ("worker.max_decode_attempts", 0, "worker.max_decode_attempts: must be at least 1"),
        ("decision.positive_threshold", 0, "decision.positive_threshold: must be greater than 0"),
        ("decision.positive_threshold", 1.5, "decision.positive_threshold: must be at most 1"),
        ("decision.uncertain_threshold", -0.1, "decision.uncertain_threshold: must be at least 0"),
        (
            "images.formats",
            ["jpeg", "gif"],
            "images.formats[1]: must be one of JPEG, MPO, PNG, WEBP",
        ),
        ("images.formats", [], "images.formats: must not be empty"),
        ("images.extensions", ["jpg"], "images.extensions[0]: must start with a dot, like .jpg"),
        ("images.max_pixels", 0, "images.max_pixels: must be greater than 0"),
        ("logging.level", "verbose", "logging.level: must be one of DEBUG, INFO, WARNING, ERROR"),
        ("database.url", "", "database.url: must not be empty"),
        (
            "database.url",
            "not a url",
            "database.url: is not a database URL (expected e.g. sqlite:///tigerwatch.db)",
        ),
        ("model", 5, "model: must be a mapping of keys to values"),
        ("labels", "a tiger", "labels: must be a list"),
        ("paths.inbox", [], "paths.inbox: must not be empty"),
        ("paths.review", None, "paths.review: must not be empty"),
        ("paths.review", "", "paths.review: must not be empty"),
        ("paths.archive", 7, "paths.archive: must be a folder path"),
        (
            "paths.inbox",
            [{"path": "in", "polling": "maybe"}],
            "paths.inbox[0].polling: must be true or false",
        ),
        (
            "paths.inbox",
            [{"folder": "in"}],
            "paths.inbox[0].folder: unknown key (known keys: path, polling)",
        ),
    ],
)
def test_each_mistake_is_reported_with_its_key_path(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    data = minimal_config()
    _set(data, key, value)

    problems = problems_for(tmp_path, data)

    assert f"{tmp_path / 'tigerwatch.yaml'}: {expected}" in problems


def test_missing_review_folder_is_required(tmp_path: Path) -> None:
    data = minimal_config()
    del data["paths"]["review"]

    problems = problems_for(tmp_path, data)

    # Only review is missing: its derived default (uncertain) must not be reported as well.
    assert problems == (f"{tmp_path / 'tigerwatch.yaml'}: paths.review: is required",)


def test_missing_paths_section_is_required(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, {"station": "north ridge"})

    assert problems == (f"{tmp_path / 'tigerwatch.yaml'}: paths: is required",)


def test_reversed_thresholds_are_reported_on_the_uncertain_threshold(tmp_path: Path) -> None:
    data = minimal_config() | {"decision": {"positive_threshold": 0.3, "uncertain_threshold": 0.6}}

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: decision.uncertain_threshold: "
        "must not be greater than positive_threshold (0.3)",
    )


def test_a_low_positive_threshold_is_checked_against_the_default_uncertain(
    tmp_path: Path,
) -> None:
    data = minimal_config() | {"decision": {"positive_threshold": 0.1}}

    problems = problems_for(tmp_path, data)

    assert len(problems) == 1
    assert "decision.uncertain_threshold: must not be greater than" in problems[0]


def test_labels_without_a_target_are_rejected(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, minimal_config() | {"labels": NO_TARGET_LABELS})

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: labels: "
        "needs at least one label with target: true (the tiger prompts)",
    )


def test_labels_that_are_all_targets_are_rejected(tmp_path: Path) -> None:
    labels = [{"text": "an Amur tiger", "target": True}, {"text": "a tiger", "target": True}]

    problems = problems_for(tmp_path, minimal_config() | {"labels": labels})

    assert len(problems) == 1
    assert "labels: needs at least one label without target: true" in problems[0]


def test_a_single_label_is_not_enough(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, minimal_config() | {"labels": [{"text": "a tiger"}]})

    assert any("labels: needs at least 2 labels" in problem for problem in problems)


def test_duplicate_label_texts_are_rejected_ignoring_case(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, minimal_config() | {"labels": DUPLICATE_LABELS})

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: labels[2].name: "
        "repeats labels[1].name (names must be unique, any case)",
    )


# --- folder sanity ------------------------------------------------------------------------


def test_inbox_inside_review_is_rejected(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["inbox"] = "review/incoming"

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[0].path: lies inside the review folder "
        f"{tmp_path / 'review'}; the daemon would re-ingest its own output",
    )


def test_output_folder_inside_an_inbox_is_rejected_once(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["review"] = "inbox/review"

    problems = problems_for(tmp_path, data)

    # uncertain (by default inside review) is covered by the review problem.
    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.review: lies inside inbox "
        f"{tmp_path / 'inbox'} (paths.inbox[0]); the daemon would re-ingest its own output",
    )


def test_output_folder_equal_to_an_inbox_is_rejected(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["quarantine"] = "./inbox/"

    problems = problems_for(tmp_path, data)

    assert len(problems) == 1
    assert "paths.quarantine: is inbox" in problems[0]


def test_an_inbox_listed_twice_is_rejected(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["inbox"] = ["inbox", {"path": str(tmp_path / "inbox"), "polling": True}]

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[1].path: repeats paths.inbox[0]",
    )


def test_an_inbox_given_as_a_symlink_is_resolved_to_its_folder(tmp_path: Path) -> None:
    card = tmp_path / "mnt" / "card"
    card.mkdir(parents=True)
    (tmp_path / "inbox").symlink_to(card, target_is_directory=True)

    config = load_config(write_config(tmp_path, minimal_config()))

    assert config.paths.inbox[0].path == card.resolve()
    assert config.paths.review == tmp_path / "review"  # outputs keep the path as written


def test_links_above_an_inbox_are_kept_as_written(tmp_path: Path) -> None:
    # Rows already recorded under that spelling must keep matching their files.
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "inbox").mkdir()
    data = minimal_config()
    data["paths"]["inbox"] = "via/inbox"

    config = load_config(write_config(tmp_path, data))

    assert config.paths.inbox[0].path == tmp_path / "via" / "inbox"


def test_uncertain_may_nest_in_review_and_be_set_explicitly(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"] |= {"uncertain": "review/maybe", "duplicates": "dupes"}

    config = load_config(write_config(tmp_path, data))

    assert config.paths.uncertain == tmp_path / "review" / "maybe"
    assert config.paths.duplicates == tmp_path / "dupes"


# --- the file itself ----------------------------------------------------------------------


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("paths:\n  inbox: [unclosed\n  review: r\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert len(caught.value.problems) == 1
    assert re.fullmatch(
        rf"{re.escape(str(path))}: YAML error at line \d+, column \d+: .+", caught.value.problems[0]
    )


def test_a_key_given_twice_is_a_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  batch_size: 8\nmodel:\n  batch_size: 4\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == (
        f"{path}: YAML error at line 3, column 1: the key 'model' is given twice",
    )


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == (f"{path}: no such file",)


def test_a_folder_instead_of_a_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{tmp_path}: cannot read the file: ")


def test_empty_file_is_a_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here yet\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == (
        f"{path}: the file is empty; it needs at least a paths section",
    )


def test_top_level_list_is_a_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- paths\n- labels\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == (
        f"{path}: the top level must be a mapping of keys to values, not a list",
    )


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = minimal_config() | {
        "labels": LABELS_WITH_EMPTY_TEXT,
        "model": {"batch_size": 1000, "precison": "bf16"},
        "logging": {"level": "loud"},
    }
    del data["paths"]["archive"]
    path = write_config(tmp_path, data)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    expected = {
        f"{path}: paths.archive: is required",
        f"{path}: model.batch_size: must be at most 256",
        f"{path}: model.precison: unknown key (did you mean 'precision'?)",
        f"{path}: labels[2].text: must not be empty",
        f"{path}: logging.level: must be one of DEBUG, INFO, WARNING, ERROR",
    }
    assert set(caught.value.problems) == expected
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_pydantic_internal_names_do_not_leak_into_key_paths(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["inbox"] = ["inbox2", 123]

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[1]: "
        "must be a folder path or a mapping with path and polling",
    )


# --- what a valid file turns into ---------------------------------------------------------


def test_relative_paths_are_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    data = {
        "paths": {
            "inbox": ["in", {"path": "/srv/uploads", "polling": True}],
            "review": "../data/review",
            "archive": "data/archive",
            "quarantine": str(tmp_path / "q"),
        },
        "database": {"url": "sqlite:///db/tigerwatch.db"},
    }
    path = write_config(config_dir, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(Path("../etc/tigerwatch.yaml"))

    assert config.source == path
    assert [inbox.path for inbox in config.paths.inbox] == [config_dir / "in", Path("/srv/uploads")]
    assert [inbox.polling for inbox in config.paths.inbox] == [False, True]
    assert config.paths.review == tmp_path / "data" / "review"
    assert config.paths.uncertain == tmp_path / "data" / "review" / "uncertain"
    assert config.paths.archive == config_dir / "data" / "archive"
    assert config.paths.duplicates == config_dir / "data" / "archive" / "duplicates"
    assert config.paths.quarantine == tmp_path / "q"
    assert config.database.url == f"sqlite:///{config_dir / 'db' / 'tigerwatch.db'}"


def test_default_database_sits_next_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, minimal_config()))

    assert config.database.url == f"sqlite:///{tmp_path / 'tigerwatch.db'}"


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "postgresql://tiger@db.example/tigerwatch"],
)
def test_other_database_urls_are_left_alone(tmp_path: Path, url: str) -> None:
    config = load_config(write_config(tmp_path, minimal_config() | {"database": {"url": url}}))

    assert config.database.url == url


def test_home_folder_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    data = minimal_config()
    data["paths"]["inbox"] = "~/camera-inbox"

    config = load_config(write_config(tmp_path, data))

    assert config.paths.inbox[0].path == home / "camera-inbox"


def test_local_model_folder_is_resolved_but_hub_ids_are_not(tmp_path: Path) -> None:
    (tmp_path / "models" / "clip").mkdir(parents=True)
    local = minimal_config() | {"model": {"name_or_path": "./clip-vit-base-patch32"}}
    saved = minimal_config() | {"model": {"name_or_path": "models/clip"}}
    hub = minimal_config() | {"model": {"name_or_path": "openai/clip-vit-base-patch16"}}

    assert load_config(write_config(tmp_path, local)).model.name_or_path == str(
        tmp_path / "clip-vit-base-patch32"
    )
    assert load_config(write_config(tmp_path, saved)).model.name_or_path == str(
        tmp_path / "models" / "clip"
    )
    assert (
        load_config(write_config(tmp_path, hub)).model.name_or_path
        == "openai/clip-vit-base-patch16"
    )


def test_choices_accept_any_letter_case(tmp_path: Path) -> None:
    data = minimal_config() | {
        "model": {"precision": "BF16", "device": "CUDA:1"},
        "images": {"formats": ["jpeg", "Png"], "extensions": [".JPG", ".Jpeg"]},
        "logging": {"level": "debug"},
    }

    config = load_config(write_config(tmp_path, data))

    assert (config.model.precision, config.model.device) == ("bf16", "cuda:1")
    assert config.images.formats == ("JPEG", "PNG")
    assert config.images.extensions == (".jpg", ".jpeg")
    assert config.logging.level == "DEBUG"


def test_labels_are_stripped_and_may_be_plain_text(tmp_path: Path) -> None:
    labels = [{"text": "  an Amur tiger ", "target": True}, "a wild boar"]

    config = load_config(write_config(tmp_path, minimal_config() | {"labels": labels}))

    assert config.labels == (Label(text="an Amur tiger", target=True), Label(text="a wild boar"))


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    path = tmp_path / "sparse.yaml"
    path.write_text(
        "paths: {inbox: in, review: r, archive: a, quarantine: q}\n"
        "model:\n  # batch_size: 32\nwatch:\n",
        encoding="utf-8",
    )

    config = load_config(path)

    assert config.model == Model()
    assert config.watch == Watch()


def test_parse_config_takes_an_already_parsed_value(tmp_path: Path) -> None:
    config = parse_config(minimal_config(), source=tmp_path / "inline.yaml")

    assert config.paths.review == tmp_path / "review"
    with pytest.raises(ConfigError) as caught:
        parse_config(["not", "a", "mapping"], source=tmp_path / "inline.yaml")
    assert caught.value.problems == (
        f"{tmp_path / 'inline.yaml'}: "
        "the top level must be a mapping of keys to values, not a list",
    )


def test_config_is_immutable(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, minimal_config()))

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.model.batch_size = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.station = "other"  # type: ignore[misc]
    assert isinstance(config.paths.inbox, tuple)
    assert isinstance(config.labels, tuple)


@pytest.mark.parametrize("mode", ["0440", "0240", "0040", "0500"])
def test_a_files_mode_without_owner_read_and_write_is_refused(tmp_path: Path, mode: str) -> None:
    data = minimal_config()
    data["files"] = {"mode": mode}

    problems = problems_for(tmp_path, data)

    print(f"\n[{mode}] {problems}")
    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: files.mode: '{mode}' must give the owner read and "
        "write (e.g. '0640'): the daemon verifies its moves and writes into the dated folders "
        "it makes with this mode",
    )


@pytest.mark.parametrize("mode", ["0600", "0640", "0664"])
def test_a_files_mode_with_owner_read_and_write_is_accepted(tmp_path: Path, mode: str) -> None:
    data = minimal_config()
    data["files"] = {"mode": mode}

    assert load_config(write_config(tmp_path, data)).files.mode == int(mode, 8)


# --- prompt sets, light and views -------------------------------------------------------------


def test_labels_with_prompt_sets_load_beside_the_older_form(tmp_path: Path) -> None:
    labels = [
        {
            "name": "Amur tiger",
            "target": True,
            "prompts": ["a camera trap photo of an Amur tiger", " a photo of a tiger "],
            "infrared_prompts": ["an infrared camera trap photo of a tiger at night"],
        },
        {"text": "a photo of a deer"},
        "an empty forest",
    ]

    config = load_config(write_config(tmp_path, minimal_config() | {"labels": labels}))

    tiger, deer, empty = config.labels
    assert tiger.prompts == ("a camera trap photo of an Amur tiger", "a photo of a tiger")
    assert tiger.prompts_for(infrared=True) == (
        "an infrared camera trap photo of a tiger at night",
    )
    assert (deer.name, deer.prompts, deer.infrared_prompts) == (
        "a photo of a deer",
        ("a photo of a deer",),
        (),
    )
    assert (empty.name, empty.prompts) == ("an empty forest", ("an empty forest",))


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ({"name": "tiger", "target": True}, "labels[0].prompts: "),
        ({"name": "tiger", "target": True, "prompts": []}, "labels[0].prompts: "),
        ({"name": "tiger", "prompts": ["a", " "]}, "labels[0].prompts[1]: must not be empty"),
        ({"text": "a tiger", "prompts": ["a"]}, "labels[0].text: give either text or prompts"),
        ({"text": 5}, "labels[0].text: must be text"),
    ],
)
def test_bad_prompt_sets_are_named_at_their_key(
    tmp_path: Path, label: dict[str, Any], expected: str
) -> None:
    labels = [label, {"text": "a deer"}]

    problems = problems_for(tmp_path, minimal_config() | {"labels": labels})

    assert any(expected in problem for problem in problems), problems


def test_infrared_thresholds_are_checked_against_their_resolved_partner(tmp_path: Path) -> None:
    decision = {"positive_threshold": 0.5, "infrared": {"uncertain_threshold": 0.6}}

    problems = problems_for(tmp_path, minimal_config() | {"decision": decision})

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: decision.infrared.uncertain_threshold: "
        "must not be greater than the infrared positive threshold (0.5)",
    )


def test_model_view_is_one_of_three(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, minimal_config() | {"model": {"view": "zoom"}})

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: model.view: must be one of center, pad, crops",
    )
    config = load_config(write_config(tmp_path, minimal_config() | {"model": {"view": "PAD"}}))
    assert config.model.view == "pad"

"""The one definition of the settings (the fields of `RunConfig` with their flags) against the parser
built from it and the flag tables of docs/FLAGS.md, which are written by hand and checked here."""
import dataclasses
import re

import pytest

from conftest import ROOT
from runner import command_line
from runner import config
from runner.errors import UsageError

EVERY_FLAG = {**config.FLAGS, **config.ACTIONS}


def documented_rows() -> dict[str, str]:
    """The default column of docs/FLAGS.md's tables, by each row's flags (`--channels-last`,
    `--no-channels-last` share a row)."""
    rows = {}
    for line in (ROOT / "docs" / "FLAGS.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `--"):
            rows |= {flag: cells[1] for flag in re.findall(r"`(--[\w-]+)", cells[0])}
    return rows


def as_documented(flag) -> str | None:
    """How docs/FLAGS.md writes the flag's default: on/off for a switch, the value itself otherwise;
    None where the default (None) is a choice left to the run, which the docs say in words."""
    if flag.required:
        return "(required)"
    if isinstance(flag.default, bool):
        return "on" if flag.default else "off"
    return None if flag.default is None else str(flag.default)


def test_the_flag_tables_list_exactly_the_flags_of_the_settings_and_actions():
    defined = {spelling for flag in EVERY_FLAG.values() for spelling in (flag.spelling, flag.negative) if spelling}
    assert set(documented_rows()) == defined
    assert {"--num_classes", "--no-deterministic", "--resume"} <= defined


@pytest.mark.parametrize("name", list(EVERY_FLAG))
def test_the_flag_tables_show_each_default_of_the_definition(name):
    flag, cell = EVERY_FLAG[name], documented_rows()[EVERY_FLAG[name].spelling]
    documented = cell.strip("`").split(" (")[0]
    expected = as_documented(flag)
    if expected is None:
        assert cell != ""
    elif isinstance(flag.default, (int, float)) and not isinstance(flag.default, bool):
        assert float(documented) == flag.default
    else:
        assert documented == expected


def test_the_docs_name_the_second_spelling_of_every_joined_flag():
    text = (ROOT / "docs" / "FLAGS.md").read_text()
    joined = [flag.also for flag in EVERY_FLAG.values() if flag.also]
    assert len(joined) == 5 and all(f"`{spelling}`" in text for spelling in joined)


def test_every_setting_and_action_is_read_under_its_name_with_its_default():
    parsed = vars(command_line.parse(["--model", "cnn"]))
    assert set(parsed) == {field.name for field in dataclasses.fields(config.RunConfig)} | {"resume", "overwrite"}
    assert parsed == {"model": "cnn"} | {name: flag.default for name, flag in EVERY_FLAG.items() if name != "model"}
    assert (parsed["batchsize"], parsed["deterministic"], parsed["amp"], parsed["channels_last"]) == \
        (128, True, False, None)


def test_help_lists_the_actions_at_the_end_of_their_group():
    help_text = command_line.build_parser().format_help()
    group = help_text.split(f"{config.RUN}:")[1].split(f"{config.SPEED}:")[0]
    flags = re.findall(r"^  (--[\w-]+)", group, flags=re.MULTILINE)
    assert flags[-3:] == ["--tensorboard", "--resume", "--overwrite"]


@pytest.mark.parametrize("argv, message", [
    (["--corruptprob", "1.5"], "--corruptprob must be within [0, 1], got 1.5"),
    (["--corrupt-prob", "-0.1"], "--corruptprob must be within [0, 1], got -0.1"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--workers", "-1"], "--workers must be 0 or more, got -1"),
    (["--extra_probe_batches", "0"], "--extra-probe-batches must be at least 1, got 0"),
    (["--workers", "-1", "--batchsize", "0"], "--batchsize must be at least 1, got 0"),
])
def test_a_value_out_of_its_range_is_named_in_the_flag_s_own_spelling(argv, message):
    with pytest.raises(UsageError) as error:
        command_line.parse(["--model", "cnn", *argv])
    assert str(error.value) == message


def test_a_setting_missing_from_an_older_record_counts_as_its_default():
    resolved = config.resolve(command_line.parse(["--model", "cnn", "--extra-probe-batches", "3"]),
                              num_classes=10, channels_last=False)
    recorded = {k: v for k, v in resolved.as_dict().items() if k not in ("extra_probe_batches", "noisy_holdout")}
    assert config.differing_settings(recorded, resolved) == {"extra_probe_batches": (4, 3)}

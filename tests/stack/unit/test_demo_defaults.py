"""`make demo` (`credited demo` with no flags) shows both faults the product exists for, each one flag away from off."""

import inspect

from typer.testing import CliRunner

from credited import cli


def test_the_default_demo_drops_some_credits_and_some_callbacks_and_each_flag_turns_one_off() -> None:
    defaults = {name: p.default for name, p in inspect.signature(cli.demo).parameters.items()}
    assert 0 < defaults["credit_loss"] < 0.1 and 0 < defaults["callback_loss"] < 0.1
    help_text = CliRunner().invoke(cli.app, ["demo", "--help"], env={"COLUMNS": "200"}).output
    assert "--credit-loss" in help_text and "--callback-loss" in help_text
    assert help_text.count("0 for none") == 2

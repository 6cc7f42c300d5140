"""[[plugins]] in the config: validation, loading (import, entry points), ``empath --check``,
and which plug-ins each listener runs."""

import socket
from pathlib import Path

import pytest
import tomlkit

from empath import daemon
from empath.cmd import empath as cli
from empath.config import ConfigError
from empath.config.sections import validate
from empath.plugins import blocklist, tagger
from empath.plugins.loader import LoadError, load, resolve

BASE = """\
[server]
hostname = "mx.example.test"
data_dir = "data"

[[listeners]]
address = "127.0.0.1:2525"

[[listeners]]
address = "127.0.0.1:2526"
"""

TWO = (
    BASE
    + """
[[plugins]]
name = "blocklist"
hook = ["mail", "rcpt"]
call = "empath.plugins.blocklist:check"
timeout = "1500ms"
options = { file = "/etc/empath/blocked" }

[[plugins]]
name = "tag"
hook = "data"
call = "tagger"
on_error = "continue"
"""
)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "fqdn.example")


def check(text: str, path: Path = Path("/etc/empath/empath.toml")):
    return validate(tomlkit.parse(text).unwrap(), text, path)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check(text)
    return info.value.problems


def test_plugins_are_read_in_order_with_their_settings():
    a, b = check(TWO).plugins
    assert (a.name, a.hooks, a.call, a.timeout, a.on_error) == (
        "blocklist",
        ("mail", "rcpt"),
        "empath.plugins.blocklist:check",
        1.5,
        "tempfail",
    )
    assert a.options == {"file": "/etc/empath/blocked"} and a.index == 0
    assert (b.hooks, b.call, b.timeout, b.on_error, b.options, b.index) == (("data",), "tagger", 5.0, "continue", {}, 1)


def test_no_plugins_by_default():
    config = check(BASE)
    assert config.plugins == () and all(listener.plugins is None for listener in config.listeners)


@pytest.mark.parametrize(
    "table, problem",
    [
        ('hook = "rcpt"\ncall = "x:y"', "plugins[0] (line 11): name is required"),
        ('name = "a"\ncall = "x:y"', "plugins[0] (line 11): hook is required"),
        ('name = "a"\nhook = "rcpt"', "plugins[0] (line 11): call is required"),
        ('name = "a b"\nhook = "rcpt"\ncall = "x:y"', "plugins[0].name (line 12): must be 1 to 64 letters"),
        ('name = "a"\nhook = "rcpt_to"\ncall = "x:y"', "plugins[0].hook (line 13): 'rcpt_to' is not a hook; hooks are"),
        ('name = "a"\nhook = ["rcpt", "rcpt"]\ncall = "x:y"', "plugins[0].hook (line 13): must name each hook once"),
        ('name = "a"\nhook = []\ncall = "x:y"', "plugins[0].hook (line 13): must name each hook once"),
        ('name = "a"\nhook = 3\ncall = "x:y"', "plugins[0].hook (line 13): must be a list of strings"),
        ('name = "a"\nhook = "rcpt"\ncall = "x y:z"', "plugins[0].call (line 14): must be package.module:function"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:"', "plugins[0].call (line 14): must be package.module:function"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:y"\ntimeout = 0', "plugins[0].timeout (line 15): must be longer"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:y"\ntimeout = "soon"', "plugins[0].timeout (line 15):"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:y"\non_error = "accept"', "plugins[0].on_error (line 15): must be"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:y"\noptions = 3', "plugins[0].options (line 15): must be a table"),
        ('name = "a"\nhook = "rcpt"\ncall = "x:y"\nfile = "/x"', "plugins[0].file (line 15): unknown key"),
    ],
)
def test_bad_plugin_tables(table, problem):
    problems = problems_of(BASE + "\n[[plugins]]\n" + table + "\n")
    assert any(p.startswith(problem) for p in problems), problems


def test_plugins_must_be_an_array_of_tables():
    problems = problems_of('plugins = "blocklist"\n' + BASE)
    assert problems == ["plugins (line 1): must be an array of tables: [[plugins]]"]


def test_two_plugins_with_one_name():
    one = '\n[[plugins]]\nname = "a"\nhook = "rcpt"\ncall = "x:y"\n'
    text = BASE + one + one.replace("rcpt", "mail")
    assert problems_of(text) == ["plugins[1].name (line 17): another [[plugins]] has this name"]


def test_a_listener_names_only_plugins_that_exist():
    text = TWO.replace('address = "127.0.0.1:2526"', 'address = "127.0.0.1:2526"\nplugins = ["tag", "blocklst"]')
    assert problems_of(text) == ["listeners[1].plugins (line 10): no [[plugins]] table is named 'blocklst'"]


# -- loading: what --check finds -----------------------------------------------------------


@pytest.mark.parametrize(
    "call, why",
    [
        ("no_such_module_for_empath:check", "cannot import no_such_module_for_empath: ModuleNotFoundError"),
        ("empath.plugins.blocklist:chek", "empath.plugins.blocklist has no chek"),
        ("os:sep", "os:sep is a str, not a function"),
        ("math:pow", "must take one argument, the context"),
        ("blocklst", "'blocklst' is neither package.module:function nor an empath.plugins entry point"),
    ],
)
def test_resolve_says_why_it_cannot(call, why):
    with pytest.raises(LoadError, match=why):
        resolve(call)


def test_resolve_by_module_path_and_by_entry_point():
    assert resolve("empath.plugins.blocklist:check") is blocklist.check
    assert resolve("blocklist") is blocklist.check  # setup.py: empath.plugins entry points
    assert resolve("tagger") is tagger.tag


def test_check_files_names_the_plugin_that_does_not_load(tmp_path):
    path = tmp_path / "empath.toml"
    text = TWO.replace('call = "tagger"', 'call = "empath.plugins.tagger:tga"')
    path.write_text(text)
    assert daemon.check(check(text, path)) == [
        "plugins[1].call (line 21): empath.plugins.tagger has no tga",
    ]


def test_cli_check_fails_on_a_missing_plugin_module(tmp_path, capsys):
    path = tmp_path / "empath.toml"
    path.write_text(TWO.replace("empath.plugins.blocklist:check", "mycompany.rules:check"))
    assert cli.main(["--config", str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("empath: plugins[0].call (line 14): cannot import mycompany.rules: ModuleNotFoundError")


def test_cli_check_passes_with_the_shipped_plugins(tmp_path, capsys):
    path = tmp_path / "empath.toml"
    path.write_text(TWO)
    assert cli.main(["--config", str(path), "--check"]) == 0


# -- which plug-ins run where ---------------------------------------------------------------


def test_every_listener_runs_every_plugin_unless_it_lists_its_own():
    text = (
        TWO.replace('address = "127.0.0.1:2526"', 'address = "127.0.0.1:2526"\nplugins = ["tag", "spy"]')
        + '\n[[plugins]]\nname = "spy"\nhook = ["rcpt", "data", "before_delivery"]\ncall = "tagger"\n'
    )
    plugins = load(check(text))
    first = plugins.for_listener("smtp@127.0.0.1:2525")
    second = plugins.for_listener("smtp@127.0.0.1:2526")
    assert {hook: [p.name for p in chain] for hook, chain in first.items()} == {
        "mail": ["blocklist"],
        "rcpt": ["blocklist", "spy"],
        "data": ["tag", "spy"],
    }
    assert {hook: [p.name for p in chain] for hook, chain in second.items()} == {
        "rcpt": ["spy"],
        "data": ["tag", "spy"],
    }
    assert [p.name for p in plugins.before_delivery] == ["spy"]
    blocked = first["mail"][0]
    assert blocked.timeout == 1.5 and not blocked.fail_open and blocked.options["file"] == "/etc/empath/blocked"
    assert first["data"][0].fail_open
    with pytest.raises(TypeError):
        blocked.options["file"] = "/tmp/other"  # read-only for the plug-in


def test_a_listener_order_is_its_own():
    text = TWO.replace('hook = "data"', 'hook = "mail"').replace(
        'address = "127.0.0.1:2526"', 'address = "127.0.0.1:2526"\nplugins = ["tag", "blocklist"]'
    )
    plugins = load(check(text))
    assert [p.name for p in plugins.for_listener("smtp@127.0.0.1:2525")["mail"]] == ["blocklist", "tag"]
    assert [p.name for p in plugins.for_listener("smtp@127.0.0.1:2526")["mail"]] == ["tag", "blocklist"]


def test_an_empty_list_turns_plugins_off_on_that_listener():
    text = TWO.replace('address = "127.0.0.1:2526"', 'address = "127.0.0.1:2526"\nplugins = []')
    plugins = load(check(text))
    assert plugins.for_listener("smtp@127.0.0.1:2526") == {}
    assert plugins.for_listener("smtp@127.0.0.1:2525") != {}


def test_reload_calls_each_plugin_modules_reload_and_survives_a_bad_one(tmp_path, monkeypatch, caplog):
    (tmp_path / "reloading_rules.py").write_text(
        "calls = []\ndef check(ctx):\n    return None\ndef reload():\n    calls.append(1)\n    raise OSError('gone')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = BASE + '\n[[plugins]]\nname = "r"\nhook = ["rcpt", "before_delivery"]\ncall = "reloading_rules:check"\n'
    plugins = load(check(text))
    plugins.reload()
    import reloading_rules

    assert reloading_rules.calls == [1]  # once, though two listeners and two hooks use it
    [record] = [r for r in caplog.records if r.getMessage() == "plugin_error"]
    assert record.fields["plugin"] == "reloading_rules" and record.fields["hook"] == "reload"
    assert "gone" in record.fields["error"]


def test_load_names_the_table_of_a_plugin_that_does_not_load():
    with pytest.raises(LoadError, match=r"^plugins\[1\]\.call: empath.plugins.tagger has no tga$"):
        load(check(TWO.replace('call = "tagger"', 'call = "empath.plugins.tagger:tga"')))

"""Where the client finds the server and its key: flags, then STRATA_URL/STRATA_API_KEY/STRATA_MODEL,
then the config file, then the key `make run` wrote for a server on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.client.config import DEFAULT_URL, ClientConfigError, load_config


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config home and working directory: nothing configured."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(home: Path, text: str) -> Path:
    path = home / "config" / "strata" / "client.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_nothing_configured_is_the_local_server_without_a_key(home):
    config = load_config()
    assert (config.url, config.api_key, config.model, config.key_source) == (DEFAULT_URL, None, None, "none")


def test_flags_win_over_variables_which_win_over_the_file(home, monkeypatch):
    path = write_config(home, 'url = "http://file:1"\napi_key = "from-file"\nmodel = "north"\n')
    assert load_config() == load_config().__class__("http://file:1", "from-file", "north", str(path))
    monkeypatch.setenv("STRATA_URL", "http://env:2/")
    monkeypatch.setenv("STRATA_API_KEY", "from-env")
    monkeypatch.setenv("STRATA_MODEL", "south")
    config = load_config()
    assert (config.url, config.api_key, config.model, config.key_source) == (
        "http://env:2", "from-env", "south", "STRATA_API_KEY")
    config = load_config("https://flag:3", "from-flag", "east")
    assert (config.url, config.api_key, config.model, config.key_source) == (
        "https://flag:3", "from-flag", "east", "--api-key")


def test_strata_config_names_another_file(home, monkeypatch):
    other = home / "elsewhere.toml"
    other.write_text('api_key = "k"\n')
    monkeypatch.setenv("STRATA_CONFIG", str(other))
    assert load_config().api_key == "k"


def test_a_local_server_lends_the_admin_key_make_run_wrote(home, monkeypatch):
    (home / "var").mkdir()
    (home / "var" / "api-keys.txt").write_text("STRATA_ADMIN_KEY=adm-123\nSTRATA_INFER_KEY=inf-456\n")
    config = load_config()
    assert (config.api_key, config.key_source) == ("adm-123", "var/api-keys.txt")
    # Never sent to another host.
    assert load_config("http://strata.example.com").api_key is None
    monkeypatch.setenv("STRATA_DATA_DIR", str(home / "nowhere"))
    assert load_config().api_key is None


@pytest.mark.parametrize("text, message", [
    ("url = [", "not valid TOML"),
    ('token = "x"\n', "unknown key(s) token; known: url, api_key, model"),
    ("api_key = 5\n", "api_key must be a string"),
    ('url = "ftp://x"\n', "server URL 'ftp://x' must look like http://host:port"),
])
def test_a_bad_config_file_is_named_with_what_is_wrong(home, text, message):
    path = write_config(home, text)
    with pytest.raises(ClientConfigError) as err:
        load_config()
    assert message in str(err.value)
    if "server URL" not in message:
        assert str(path) in str(err.value)


def test_a_bad_url_variable_is_refused(home, monkeypatch):
    monkeypatch.setenv("STRATA_URL", "127.0.0.1:8000")
    with pytest.raises(ClientConfigError, match="STRATA_URL, --url or the config file"):
        load_config()

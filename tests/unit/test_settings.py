"""Settings.from_env: names, types, booleans, comma lists, clear errors, and the generated key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from settings import Settings, SettingsError, markdown_table


def test_defaults_with_an_empty_environment():
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.models_dir == Path("models")
    assert settings.model_name == ""
    assert settings.api_keys == []
    assert settings.require_api_key is True
    assert settings.reload is False
    assert settings.max_queue == 32
    assert settings.max_loaded_models == 1
    assert settings.n_batch == 32
    assert settings.device == "cpu"
    assert settings.threads == (os.cpu_count() or 1)  # N_THREADS=0 means all cores


def test_variables_are_the_field_names_in_upper_case_and_are_typed():
    settings = Settings.from_env(
        {
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "MODELS_DIR": "/tmp/m",
            "MODEL_NAME": "x.gguf",
            "N_THREADS": "3",
            "N_CTX": "4096",
            "QUEUE_TIMEOUT_S": "2.5",
            "MAX_QUEUE": "7",
            "UNRELATED": "ignored",
        }
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.models_dir == Path("/tmp/m")
    assert settings.model_name == "x.gguf"
    assert settings.threads == 3
    assert settings.n_ctx == 4096
    assert settings.queue_timeout_s == 2.5
    assert settings.max_queue == 7


@pytest.mark.parametrize(
    ("environ", "share"),
    [({}, 16), ({"MAX_QUEUE": "1"}, 1), ({"MAX_QUEUE": "5"}, 2), ({"MAX_QUEUE_PER_KEY": "3"}, 3),
     ({"MAX_QUEUE": "8", "MAX_QUEUE_PER_KEY": "20"}, 8)],
)
def test_a_keys_share_of_the_queue_is_half_of_it_unless_set(environ, share):
    assert Settings.from_env(environ).queue_per_key == share


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "Yes", "on", " true "])
def test_true_words(word):
    assert Settings.from_env({"RELOAD": word}).reload is True


@pytest.mark.parametrize("word", ["0", "false", "False", "no", "OFF", ""])
def test_false_words(word):
    assert Settings.from_env({"REQUIRE_API_KEY": word}).require_api_key is False


def test_a_word_that_is_not_a_boolean_is_a_clear_error():
    with pytest.raises(SettingsError, match=r"REQUIRE_API_KEY='maybe' is not a boolean"):
        Settings.from_env({"REQUIRE_API_KEY": "maybe"})


def test_comma_lists_are_split_and_stripped():
    settings = Settings.from_env({"API_KEYS": " sk-a, sk-b ,,sk-c ", "CORS_ORIGINS": "http://a.test"})
    assert settings.api_keys == ["sk-a", "sk-b", "sk-c"]
    assert settings.cors_origins == ["http://a.test"]
    assert Settings.from_env({"API_KEYS": ""}).api_keys == []
    assert Settings.from_env({"API_KEYS": " , "}).api_keys == []


@pytest.mark.parametrize(
    "env, names",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_QUEUE": "0"}, "MAX_QUEUE"),
        ({"N_CTX": "10"}, "N_CTX"),
        ({"QUEUE_TIMEOUT_S": "-1"}, "QUEUE_TIMEOUT_S"),
    ],
)
def test_invalid_values_name_the_variable(env, names):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert names in str(info.value)
    assert str(info.value).startswith("invalid configuration:")


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(Exception):
        settings.port = 1  # type: ignore[misc]


def test_generated_key_when_keys_are_required_but_none_set():
    settings, key = Settings.from_env({}).with_generated_key()
    assert key is not None and key.startswith("sk-local-") and len(key) > 30
    assert settings.api_keys == [key]
    _, other = Settings.from_env({}).with_generated_key()
    assert other != key  # random each start


def test_no_generated_key_when_keys_are_set_or_not_required():
    settings = Settings.from_env({"API_KEYS": "sk-x"})
    assert settings.with_generated_key() == (settings, None)
    open_settings = Settings.from_env({"REQUIRE_API_KEY": "false"})
    assert open_settings.with_generated_key() == (open_settings, None)


def test_markdown_table_lists_every_variable_with_its_default():
    table = markdown_table()
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in table
    assert "| `PORT` | `8000` |" in table
    assert "| `API_KEYS` | (empty) |" in table


def test_the_readme_carries_the_generated_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "regenerate the README's configuration table with `python settings.py`"

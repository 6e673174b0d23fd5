import pytest

import canonlabel
from canonlabel.config import load_settings, write_config
from canonlabel.errors import ConfigError


def test_precedence_cli_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    write_config(cfg, {"min_similarity": 0.9, "label_similarity": 0.6, "candidates": 2})
    monkeypatch.setenv("CANONLABEL_LABEL_SIMILARITY", "0.65")
    s = load_settings(cfg, candidates=7, llm=None)
    assert s.min_similarity == 0.9  # file
    assert s.label_similarity == 0.65  # env beats file
    assert s.candidates == 7  # CLI beats both
    assert s.llm == "local"  # unset CLI option does not mask the default


def test_bad_values_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="invalid setting"):
        load_settings(None, min_similarity=1.5)
    monkeypatch.setenv("CANONLABEL_CANDIDATES", "many")
    with pytest.raises(ConfigError, match="CANONLABEL_"):
        load_settings()


def test_public_api_is_sorted_and_importable():
    assert canonlabel.__all__ == sorted(canonlabel.__all__)
    for name in canonlabel.__all__:
        assert hasattr(canonlabel, name)

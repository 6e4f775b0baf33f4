"""schemas/cache.py: the one cache folder of generated data and converted models."""
from pathlib import Path

from schemas import cache


def test_the_cache_folder_is_the_environment_variable_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    assert cache.cache_dir() == tmp_path
    monkeypatch.delenv(cache.ENV)
    assert cache.cache_dir() == Path.home() / ".cache" / "finsta"


def test_sample_data_and_converted_models_share_it():
    from pipeline.datasets import synthetic
    from stages import openvino_runtime
    assert synthetic.cache_dir is openvino_runtime.cache_dir is cache.cache_dir

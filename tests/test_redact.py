from pathlib import Path

import pytest

from vidcli.redact import public_url, safe_settings


@pytest.mark.parametrize("url, shown", [
    ("http://user:sk-123@host:8000/v1", "http://host:8000/v1"),
    ("https://host/v1?api_key=sk-123&model=x", "https://host/v1?api_key=***&model=x"),
    ("https://host/v1?sig=abc&token=t", "https://host/v1?sig=***&token=***"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("not a url", "not a url"),
    ("runs/model", "runs/model"),
])
def test_public_url_drops_credentials(url, shown):
    assert public_url(url) == shown


def test_safe_settings_keep_no_secret():
    settings = safe_settings({"api_key": "k", "hf_token": "t", "base_url": "http://u:k@h/v1", "lr": 1.0,
                              "out": Path("/a"), "inputs": ("x", Path("y")), "max_prompt_tokens": 5,
                              "trust_remote_code": False, "extra": {"password": "p", "n": 1}})
    assert settings == {"base_url": "http://h/v1", "lr": 1.0, "out": "/a", "inputs": ["x", "y"],
                        "max_prompt_tokens": 5, "trust_remote_code": False, "extra": {"n": 1}}

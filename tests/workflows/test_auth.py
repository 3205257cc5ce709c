"""Who may call the web apps: loopback by default, a token anywhere else."""
from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from scenetag.errors import UsageError
from scenetag.workflows.auth import TOKEN_ENV, check_bind, require_token, token_from, token_matches


def test_binding_off_loopback_needs_a_token_or_an_explicit_no_auth():
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None, "serve")
    with pytest.raises(UsageError, match="give --token"):
        check_bind("0.0.0.0", None, "serve")
    check_bind("0.0.0.0", "t", "serve")
    check_bind("0.0.0.0", None, "serve", no_auth=True)


def test_the_token_comes_from_the_flag_else_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert token_from(None) is None
    monkeypatch.setenv(TOKEN_ENV, "")
    assert token_from(None) is None  # an empty variable is no token
    monkeypatch.setenv(TOKEN_ENV, "env")
    assert token_from(None) == "env" and token_from("flag") == "flag"


def test_only_the_exact_token_passes():
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches("ab", "abc") and not token_matches(None, "abc")
    app = FastAPI()
    app.get("/data")(lambda: {"ok": 1})
    app.get("/health")(lambda: {"ok": 1})
    require_token(app, "abc")
    c = TestClient(app)
    assert c.get("/data").status_code == 401 and c.get("/data").headers["www-authenticate"] == "Bearer"
    assert c.get("/data", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.get("/data", headers={"Authorization": "Bearer abc"}).status_code == 200 and c.get("/data", headers={"Authorization": "bearer abc"}).status_code == 200
    assert c.get("/data?token=abc").status_code == 200 and c.get("/health").status_code == 200
    plain = FastAPI()
    plain.get("/data")(lambda: {"ok": 1})
    require_token(plain, None)
    assert TestClient(plain).get("/data").status_code == 200


def test_serve_refuses_a_public_address_without_a_token(trained_run, capsys, monkeypatch):
    from scenetag.cli import main

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    _, run, _ = trained_run
    assert main(["serve", "--model", str(run / "best.pt"), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "give --token" in capsys.readouterr().err

"""Login for a shared server: the password file, ``python -m sccore add-user``, the login gate and per-user uploads,
the back-off after failed logins, who may log in with OpenID Connect, and no server that runs open by accident."""

import io
import logging
import stat

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from dashboard import access
from sccore import InputError
from sccore.auth import FREE_ATTEMPTS, LoginThrottle, add_user, oidc_user, read_password_file, verify_password
from sccore.settings import load_settings
from sccore.cli import main
from tests.conftest import ROOT, make_counts, rendered

TIMEOUT = 240


def test_passwords_are_stored_salted_and_hashed(tmp_path):
    path = tmp_path / "users"
    assert add_user(path, "alice", "correct horse") is False
    assert add_user(path, "bob", "correct horse") is False
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob"]
    assert all(len(line.split(":")[1]) == 32 and len(line.split(":")[2]) == 64 for line in lines)
    assert lines[0].split(":")[2] != lines[1].split(":")[2]  # the same password, different salts
    assert "correct horse" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify_password(path, "alice", "correct horse")
    assert not verify_password(path, "alice", "correct horse ")
    assert not verify_password(path, "carol", "correct horse")


def test_changing_a_password_keeps_one_line_per_user(tmp_path):
    path = tmp_path / "users"
    add_user(path, "alice", "first password")
    assert add_user(path, "alice", "second password") is True
    assert list(read_password_file(path)) == ["alice"]
    assert verify_password(path, "alice", "second password") and not verify_password(path, "alice", "first password")


@pytest.mark.parametrize("user, password, message", [
    ("alice:admin", "long enough", "not allowed"),
    ("../alice", "long enough", "not allowed"),
    ("alice", "short", "too short"),
])
def test_bad_user_names_and_short_passwords_are_refused(tmp_path, user, password, message):
    with pytest.raises(InputError, match=message):
        add_user(tmp_path / "users", user, password)


def test_a_damaged_password_file_names_the_line(tmp_path):
    path = tmp_path / "users"
    path.write_text("# users\nalice:00ff:not-hex\n")
    with pytest.raises(InputError, match="Line 2 of the password file"):
        verify_password(path, "alice", "anything")
    with pytest.raises(InputError, match="not found"):
        verify_password(tmp_path / "missing", "alice", "anything")


def test_add_user_command(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["add-user", "--password-file", str(path), "--password-stdin", "alice"]) == 0
    assert "Added alice" in capsys.readouterr().out
    assert verify_password(path, "alice", "a long password")
    monkeypatch.setenv("SCCORE_SETTINGS", str(tmp_path / "empty.toml"))
    (tmp_path / "empty.toml").write_text("")
    assert main(["add-user", "--password-stdin", "bob"]) == 2
    assert "No password file" in capsys.readouterr().err


def test_failed_logins_are_logged_and_make_that_user_name_wait_longer(caplog):
    throttle, now = LoginThrottle(), 1000.0
    with caplog.at_level(logging.WARNING, logger="sccore.auth"):
        for attempt in range(FREE_ATTEMPTS):
            assert throttle.wait_s("alice", now) == 0
            throttle.failed("alice", now, origin="10.0.0.9")
    assert "Failed login for user 'alice' (3 in a row) from 10.0.0.9" in caplog.text
    waits = [throttle.wait_s("alice", now)]
    throttle.failed("alice", now)
    waits.append(throttle.wait_s("alice", now))
    assert waits == [2.0, 4.0] and throttle.wait_s("alice", now + 4.0) == 0  # the wait doubles, then ends
    assert throttle.wait_s("bob", now) == 0  # other names are not slowed down
    for _ in range(40):
        throttle.failed("mallory", now)
    assert throttle.wait_s("mallory", now) == 900.0  # at most a quarter of an hour
    throttle.succeeded("alice")
    assert throttle.wait_s("alice", now) == 0


@pytest.mark.parametrize("claims, message", [
    ({"email": "eve@gmail.com", "email_verified": False}, "did not confirm an e-mail address"),
    ({"email": "ann@lab.org"}, "did not confirm an e-mail address"),
    ({"sub": "12345", "email_verified": True}, "did not confirm an e-mail address"),
    ({"email": "eve@gmail.com", "email_verified": True}, "eve@gmail.com may not use this server"),
    ({"email": "eve@evil-lab.org", "email_verified": True}, "may not use this server"),
])
def test_openid_connect_admits_only_verified_allowed_addresses(claims, message):
    with pytest.raises(InputError, match=message):
        oidc_user(claims, allowed_users=["guest@uni.edu"], allowed_domains=["lab.org"])


def test_openid_connect_users_are_their_verified_addresses():
    assert oidc_user({"email": "Ann@Lab.org", "email_verified": True}, [], ["lab.org"]) == "ann@lab.org"
    assert oidc_user({"email": "guest@uni.edu", "email_verified": "true"}, ["guest@uni.edu"], []) == "guest@uni.edu"
    assert oidc_user({"email": "x@y.com", "email_verified": True}, [], ["*"]) == "x@y.com"
    with pytest.raises(InputError, match="neither auth.allowed_users nor auth.allowed_domains"):
        load_settings({"SCCORE_AUTH_MODE": "oidc"})
    assert load_settings({"SCCORE_AUTH_MODE": "oidc", "SCCORE_AUTH_ALLOWED_DOMAINS": "lab.org, uni.edu"}
                         ).auth.allowed_domains == ("lab.org", "uni.edu")


# --- The login gate -------------------------------------------------------------------------------------------------


@pytest.fixture
def password_login(app_folders, tmp_path, monkeypatch):
    """The app with password login on; alice's password is 'alice password'."""
    add_user(tmp_path / "users", "alice", "alice password")
    add_user(tmp_path / "users", "bob", "bob's password")
    monkeypatch.setenv("SCCORE_AUTH_MODE", "password")
    monkeypatch.setenv("SCCORE_AUTH_PASSWORD_FILE", str(tmp_path / "users"))
    access.login_throttle.clear()


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def log_in(test: AppTest, user: str, password: str) -> AppTest:
    test.text_input(key="login_user").set_value(user)
    test.text_input(key="login_password").set_value(password)
    test.button[0].click().run()  # the form's Log in button
    return test


def shows_home(test: AppTest) -> bool:
    return any("700 PBMCs" in header.value for header in test.subheader)


def test_without_login_only_the_login_form_shows(password_login):
    test = app().run()
    assert not test.exception and not shows_home(test)
    assert [field.label for field in test.text_input] == ["User name", "Password"]
    password = test.text_input(key="login_password")
    assert password.proto.type == password.proto.PASSWORD


def test_the_right_password_opens_the_app_and_log_out_closes_it(password_login):
    test = log_in(app().run(), "alice", "alice password")
    assert not test.exception and not test.error and shows_home(test)
    assert any("alice" in caption.value for caption in test.sidebar.caption)
    test.sidebar.button(key="logout").click().run()
    assert not shows_home(test) and test.text_input(key="login_user")


def test_a_wrong_password_is_refused(password_login):
    test = log_in(app().run(), "alice", "bob's password")
    assert not test.exception and not shows_home(test)
    assert "Wrong user name or password" in rendered(test.error[0].value)
    assert "user" not in test.session_state


def test_repeated_wrong_passwords_lock_the_user_name_out_for_a_while(password_login):
    test = app().run()
    for _ in range(FREE_ATTEMPTS):
        log_in(test, "alice", "a guess")
    log_in(test, "alice", "alice password")  # even the right password waits now
    assert not test.exception and not shows_home(test)
    assert "Too many failed logins for this user name: try again in" in rendered(test.error[0].value)
    log_in(test, "bob", "bob's password")  # other users are not locked out
    assert not test.exception and shows_home(test)


@pytest.fixture
def server_profile():
    """Streamlit's options as .streamlit/config.server.toml sets them (the viewer toolbar marks the profile)."""
    before = config.get_option("client.toolbarMode")
    config.set_option("client.toolbarMode", "viewer")
    yield
    config.set_option("client.toolbarMode", before)


def test_the_server_profile_refuses_to_run_without_a_login_setting(app_folders, server_profile, monkeypatch):
    monkeypatch.delenv("SCCORE_AUTH_MODE", raising=False)
    test = app().run()
    assert not test.exception and not shows_home(test)
    assert "no settings file chooses who may log in" in rendered(test.error[0].value)
    monkeypatch.setenv("SCCORE_AUTH_MODE", "none")  # an explicit choice to serve without login
    test = app().run()
    assert not test.exception and not test.error and shows_home(test)


def test_a_page_reached_without_app_py_asks_for_login_too(password_login):
    """A page run alone (a deep link to a freshly started server) shows the login form and none of the data."""
    test = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=TIMEOUT).run()
    assert not test.exception and not test.metric and not test.radio
    log_in(test, "alice", "alice password")
    assert not test.exception and not test.error and test.metric[0].value == "700"


def test_openid_connect_needs_its_secrets(app_folders, monkeypatch):
    monkeypatch.setenv("SCCORE_AUTH_MODE", "oidc")
    monkeypatch.setenv("SCCORE_AUTH_ALLOWED_DOMAINS", "lab.example")
    test = app().run()
    assert not test.exception and not shows_home(test)
    assert "[auth] section in .streamlit/secrets.toml" in rendered(test.error[0].value)


def test_wrong_settings_show_an_error_instead_of_the_app(app_folders, monkeypatch):
    monkeypatch.setenv("SCCORE_AUTH_MODE", "password")
    monkeypatch.delenv("SCCORE_AUTH_PASSWORD_FILE", raising=False)
    test = app().run()
    assert not test.exception and "password_file is not set" in rendered(test.error[0].value)


def test_each_users_uploads_are_kept_apart(password_login, tmp_path):
    upload = tmp_path / "mine.h5ad"
    make_counts(60, 50).write_h5ad(upload)
    alice = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=TIMEOUT)
    alice.session_state["user"] = "alice"
    alice.run()
    alice.radio(key="home_choice").set_value("Upload a .h5ad file").run()
    alice.file_uploader[0].set_value(("mine.h5ad", upload.read_bytes(), "application/octet-stream")).run()
    next(button for button in alice.button if button.label == "Open upload").click().run()
    assert not alice.exception and not alice.error and alice.metric[0].value == "60"
    stored = alice.session_state["source"]
    assert "/alice/" in stored

    bob = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=TIMEOUT)
    bob.session_state["user"] = "bob"
    bob.session_state["source"] = stored
    bob.run()
    assert not bob.exception and "lies outside the folders" in rendered(bob.error[0].value)


def test_openid_connect_offers_the_providers_login_button(app_folders, monkeypatch):
    monkeypatch.setenv("SCCORE_AUTH_MODE", "oidc")
    monkeypatch.setenv("SCCORE_AUTH_ALLOWED_DOMAINS", "lab.example")
    monkeypatch.setenv("SCCORE_AUTH_OIDC_PROVIDER", "lab")
    test = app()
    test.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32,
                            "lab": {"client_id": "id", "client_secret": "secret",
                                    "server_metadata_url": "https://id.lab.example/.well-known/openid-configuration"}}
    test.run()
    assert not test.exception and not test.error and not shows_home(test)
    assert test.button[0].label == "Log in with lab"

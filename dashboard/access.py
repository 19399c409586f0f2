"""Who is using the app: no login on a laptop (the single user ``local``), a password file or OpenID Connect
on a shared server (``auth.mode`` in the settings, see :mod:`sccore.settings`).

``app.py`` calls :func:`gate` before ``st.navigation``: until someone logs in, the only page is the login
form. The pages read the user through :func:`current_user`, which shows the login form instead of any page
reached without login.
"""

from __future__ import annotations

import time

import streamlit as st

from sccore import InputError
from sccore.auth import verify_password
from sccore.settings import LOCAL_USER, Settings, load_settings

FAILED_LOGIN_DELAY_S = 1.0


def signed_in_user(settings: Settings) -> str | None:
    """The logged-in user's name (``local`` when there is no login), or None before login."""
    if settings.auth.mode == "none":
        return LOCAL_USER
    if settings.auth.mode == "password":
        return st.session_state.get("user")
    if st.user.get("is_logged_in", False):
        return str(st.user.get("email") or st.user.get("sub") or "") or None
    return None


def current_user() -> str:
    """The logged-in user's name. Before login, the login form replaces the rest of the page, which stops: a page
    reached without ``app.py`` (a deep link to a freshly started server runs the page alone) is gated too."""
    user = signed_in_user(_settings_or_stop())
    if user is None:
        login_page()
        st.stop()
    return user


def gate() -> str:
    """Show only the login page until someone logs in (when the settings ask for login), then the account and a
    log-out button in the sidebar. Returns the user's name."""
    settings = _settings_or_stop()
    user = signed_in_user(settings)
    if user is None:
        st.navigation([st.Page(login_page, title="Log in", icon=":material/login:", url_path="login")]).run()
        st.stop()
    if settings.login_required:
        st.sidebar.caption(f"Logged in as **{user}**")
        st.sidebar.button("Log out", key="logout", on_click=_log_out, args=(settings.auth.mode,))
    return user


def login_page() -> None:
    """The login form: user name and password checked against the password file, or the OpenID Connect button."""
    settings = _settings_or_stop()
    st.title("Single-cell embeddings explorer")
    if settings.auth.mode == "oidc":
        _oidc_login(settings.auth.oidc_provider)
        return
    with st.form("login", clear_on_submit=True):
        name = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            accepted = verify_password(settings.auth.password_file, name.strip(), password)
        except InputError as error:
            st.error(str(error))
            return
        if accepted:
            st.session_state["user"] = name.strip()
            st.rerun()
        time.sleep(FAILED_LOGIN_DELAY_S)  # slows down guessing
        st.error("Wrong user name or password.")


def _oidc_login(provider: str) -> None:
    """The button that sends the user to the OpenID Connect provider (``st.login``), once it is configured."""
    try:
        configured = "auth" in st.secrets
    except FileNotFoundError:
        configured = False
    if not configured:
        st.error("OpenID Connect login needs an [auth] section in .streamlit/secrets.toml (redirect_uri, "
                 "cookie_secret, client_id, client_secret, server_metadata_url); see README, 'Deploying on a lab "
                 "server'.")
        return
    st.button("Log in" + (f" with {provider}" if provider else ""), type="primary", on_click=st.login,
              args=(provider,) if provider else ())


def _log_out(mode: str) -> None:
    """Forget this browser session's login (and, with OpenID Connect, the identity cookie)."""
    if mode == "oidc":
        st.logout()
    st.session_state.clear()


def _settings_or_stop() -> Settings:
    """The settings, or an error box and a stopped page when the settings file is wrong."""
    try:
        return load_settings()
    except InputError as error:
        st.error(f"The app's settings are wrong: {error}")
        st.stop()

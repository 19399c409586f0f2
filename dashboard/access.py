"""Who is using the app: no login on a laptop (the single user ``local``), a password file or OpenID Connect
on a shared server (``auth.mode`` in the settings, see :mod:`sccore.settings`).

``app.py`` calls :func:`gate` before ``st.navigation``: until someone logs in, the only page is the login
form. The pages read the user through :func:`current_user`, which shows the login form instead of any page
reached without login. Failed password logins are logged and slowed down per user name
(:class:`sccore.auth.LoginThrottle`, shared by every session); an OpenID Connect identity needs a verified e-mail
address that the settings allow (:func:`sccore.auth.oidc_user`). Under Streamlit's server profile
(``.streamlit/config.server.toml``, recognised by its ``client.toolbarMode = "viewer"``) the app refuses to run
unless the settings choose ``auth.mode`` explicitly, so a server started without its settings file never runs open.
"""

from __future__ import annotations

import time

import streamlit as st

from dashboard.widgets import plain, show_error
from sccore import InputError
from sccore.auth import LoginThrottle, oidc_user, verify_password
from sccore.settings import LOCAL_USER, Settings, load_settings

FAILED_LOGIN_DELAY_S = 1.0


def signed_in_user(settings: Settings) -> str | None:
    """The logged-in user's name (``local`` when there is no login), or None before login."""
    if settings.auth.mode == "none":
        return LOCAL_USER
    if settings.auth.mode == "password":
        return st.session_state.get("user")
    if st.user.get("is_logged_in", False):
        try:
            return oidc_user(st.user.to_dict(), settings.auth.allowed_users, settings.auth.allowed_domains)
        except InputError as error:
            st.session_state["login_refused"] = str(error)
    return None


def server_profile() -> bool:
    """Whether Streamlit runs with the server profile (``.streamlit/config.server.toml``: users get the viewer
    toolbar), where the settings must choose ``auth.mode`` explicitly."""
    return st.get_option("client.toolbarMode") == "viewer"


@st.cache_resource
def login_throttle() -> LoginThrottle:
    """The failed-login counts of every session of this server."""
    return LoginThrottle()


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
        if st.session_state.get("login_refused"):
            st.error(st.session_state["login_refused"])
            st.button("Log out", key="refused_logout", on_click=_log_out, args=("oidc",))
            return
        _oidc_login(settings.auth.oidc_provider)
        return
    with st.form("login", clear_on_submit=True):
        name = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        name, throttle = name.strip(), login_throttle()
        wait = throttle.wait_s(name, time.monotonic())
        if wait > 0:
            st.error(f"Too many failed logins for this user name: try again in {wait:.0f} s.")
            return
        try:
            accepted = verify_password(settings.auth.password_file, name, password)
        except InputError as error:
            show_error(error)
            return
        if accepted:
            throttle.succeeded(name)
            st.session_state["user"] = name
            st.rerun()
        throttle.failed(name, time.monotonic())
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
    """The settings, or an error box and a stopped page when the settings file is wrong or the server profile runs
    without an explicit ``auth.mode``."""
    try:
        settings = load_settings()
    except InputError as error:
        st.error(f"The app's settings are wrong: {plain(error)}")
        st.stop()
    if server_profile() and not settings.auth.explicit:
        st.error("This server runs Streamlit's server profile, but no settings file chooses who may log in (started "
                 "outside the folder of sccore.toml, or without SCCORE_SETTINGS?). Point SCCORE_SETTINGS at the "
                 "server's settings file with an [auth] mode of 'password' or 'oidc', or set auth.mode = 'none' there "
                 "to serve everyone without login.")
        st.stop()
    return settings

"""Settings (file, then environment variables), path safety and the per-user folders."""

import os
import tomllib
from pathlib import Path

import pytest

from sccore import InputError
from sccore.settings import Settings, load_settings, resolve_inside, safe_file_name, user_folder_name
from tests.conftest import ROOT

FIX = "Choose a file from the data folder."


@pytest.fixture
def no_settings_file(tmp_path, monkeypatch):
    """A working directory without ``sccore.toml`` and no ``SCCORE_*`` variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SCCORE_"):
            monkeypatch.delenv(name)


def test_laptop_defaults(no_settings_file):
    settings = load_settings()
    assert settings == Settings()
    assert settings.data_dirs == (Path("data"),) and settings.model_dir == Path("models")
    assert settings.cache_dir == Path.home() / ".cache" / "sccore" / "results"
    assert settings.auth.mode == "none" and not settings.login_required
    assert settings.scheduler_address == "" and settings.max_upload_mb == 2000


def test_the_example_file_gives_the_laptop_defaults(no_settings_file):
    example = load_settings({"SCCORE_SETTINGS": str(ROOT / "sccore.example.toml")})
    assert example == Settings(data_dirs=(ROOT / "data",), model_dir=ROOT / "models")  # relative to the file


def test_the_file_is_read_and_variables_override_it(tmp_path, no_settings_file):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "sccore.toml"
    path.write_text('data_dirs = ["shared/a", "/srv/b"]\nmodel_dir = "models"\nmax_upload_mb = 500\n'
                    'scheduler_address = "tls://10.0.0.5:8786"\n'
                    '[auth]\nmode = "password"\npassword_file = "users.txt"\n')
    from_file = load_settings({"SCCORE_SETTINGS": str(path)})
    assert from_file.data_dirs == (tmp_path / "etc" / "shared" / "a", Path("/srv/b"))  # relative to the file
    assert from_file.model_dir == tmp_path / "etc" / "models"
    assert from_file.max_upload_mb == 500 and from_file.scheduler_address == "tls://10.0.0.5:8786"
    assert from_file.auth.mode == "password" and from_file.auth.password_file == tmp_path / "etc" / "users.txt"
    overridden = load_settings({"SCCORE_SETTINGS": str(path), "SCCORE_DATA_DIRS": f"x{os.pathsep}y",
                                "SCCORE_MAX_UPLOAD_MB": "10", "SCCORE_AUTH_MODE": "none",
                                "SCCORE_SCHEDULER_ADDRESS": "", "SCCORE_CACHE_DIR": "cache"})
    assert overridden.data_dirs == (Path("x"), Path("y")) and overridden.cache_dir == Path("cache")
    assert overridden.max_upload_mb == 10 and overridden.scheduler_address == "" and not overridden.login_required
    assert overridden.model_dir == from_file.model_dir  # what no variable overrides stays as in the file


def test_sccore_toml_in_the_working_directory_is_read(tmp_path, no_settings_file):
    (tmp_path / "sccore.toml").write_text('upload_dir = "up"\n')
    assert load_settings().upload_dir == tmp_path / "up"


@pytest.mark.parametrize("content, message", [
    ('data_dir = "typo"\n', "unknown keys \\(data_dir\\)"),
    ('[auth]\nmode = "ldap"\n', "must be one of none, password, oidc"),
    ('[auth]\nmode = "password"\n', "password_file is not set"),
    ("max_upload_mb = 0\n", "max_upload_mb must be a whole number"),
    ('model_dir = ""\n', "model_dir is empty"),
    ('scheduler_address = "scheduler:8786"\n', "not a Dask scheduler reached over TLS"),
    ('scheduler_address = "tcp://10.0.0.5:8786"\n', "not a Dask scheduler reached over TLS"),
    ("data_dirs = [\n", "not valid TOML"),
])
def test_wrong_settings_are_refused_with_the_fix(tmp_path, no_settings_file, content, message):
    (tmp_path / "sccore.toml").write_text(content)
    with pytest.raises(InputError, match=message):
        load_settings()


def test_a_missing_settings_file_is_an_error(tmp_path, no_settings_file):
    with pytest.raises(InputError, match="nowhere.toml cannot be read"):
        load_settings({"SCCORE_SETTINGS": str(tmp_path / "nowhere.toml")})


@pytest.fixture
def tree(tmp_path):
    """``allowed/`` with a file, a symlink leading outside and one staying inside; ``outside/`` with a file."""
    (tmp_path / "allowed" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "sub" / "a.h5ad").write_text("a")
    (tmp_path / "outside" / "secret.h5ad").write_text("s")
    (tmp_path / "allowed" / "escape.h5ad").symlink_to(tmp_path / "outside" / "secret.h5ad")
    (tmp_path / "allowed" / "alias.h5ad").symlink_to(tmp_path / "allowed" / "sub" / "a.h5ad")
    return tmp_path


def test_paths_inside_the_folders_resolve(tree):
    allowed = tree / "allowed"
    assert resolve_inside(allowed / "sub" / "a.h5ad", [allowed], FIX) == (allowed / "sub" / "a.h5ad").resolve()
    assert resolve_inside(allowed / "sub" / ".." / "sub" / "a.h5ad", [allowed], FIX).name == "a.h5ad"
    assert resolve_inside(allowed / "alias.h5ad", [allowed], FIX).name == "a.h5ad"


@pytest.mark.parametrize("path", ["allowed/../outside/secret.h5ad", "allowed/sub/../../outside/secret.h5ad",
                                  "outside/secret.h5ad", "allowed/escape.h5ad", "/etc/passwd"])
def test_paths_that_lead_outside_are_refused(tree, path):
    with pytest.raises(InputError, match=f"lies outside the folders this app may open .*{FIX}"):
        resolve_inside(tree / path, [tree / "allowed"], FIX)


def test_a_folder_whose_name_starts_like_an_allowed_one_is_outside(tmp_path):
    (tmp_path / "data-private").mkdir()
    with pytest.raises(InputError):
        resolve_inside(tmp_path / "data-private" / "x.h5ad", [tmp_path / "data"], FIX)


def test_user_folders_are_plain_names_and_never_shared():
    assert user_folder_name("alice") == "alice" and user_folder_name("a.b@lab.org") == "a.b@lab.org"
    odd = [user_folder_name(name) for name in ("../root", "a/b", "a_b", ".hidden", "", "ünï")]
    assert len(set(odd)) == len(odd)
    assert all("/" not in name and not name.startswith(".") and name for name in odd)


def test_safe_file_names():
    assert safe_file_name("../../etc/passwd.h5ad") == "passwd.h5ad"
    assert safe_file_name("my data (v2).h5ad") == "my_data_v2_.h5ad"
    assert safe_file_name(".hidden.h5ad") == "hidden.h5ad"
    assert len(safe_file_name("x" * 500 + ".h5ad")) == 100 and safe_file_name("x" * 500 + ".h5ad").endswith(".h5ad")


def test_uploads_results_and_trained_models_are_kept_per_user(tmp_path):
    laptop = Settings(upload_dir=tmp_path / "up", cache_dir=tmp_path / "cache", model_dir=tmp_path / "models")
    assert laptop.user_model_dir("local") == tmp_path / "models"
    server = load_settings({"SCCORE_UPLOAD_DIR": str(tmp_path / "up"), "SCCORE_CACHE_DIR": str(tmp_path / "cache"),
                            "SCCORE_MODEL_DIR": str(tmp_path / "models"), "SCCORE_SETTINGS": os.devnull,
                            "SCCORE_AUTH_MODE": "oidc", "SCCORE_AUTH_ALLOWED_DOMAINS": "lab.org"})
    assert server.user_upload_dir("alice") == tmp_path / "up" / "alice"
    assert server.user_model_dir("alice") == tmp_path / "up" / "alice" / "models"  # the shared folder is read-only
    assert server.results_dir(tmp_path / "up" / "alice" / "x.h5ad") == tmp_path / "cache" / "users" / "alice"
    assert server.results_dir(tmp_path / "data" / "x.h5ad") == tmp_path / "cache"
    assert server.results_dir(None) == tmp_path / "cache"


def test_uploads_over_the_limit_are_refused():
    limited = Settings(max_upload_mb=1)
    limited.check_upload_size("ok.h5ad", 2**20)
    with pytest.raises(InputError, match="1.5 MB, over this server's upload limit of 1 MB"):
        limited.check_upload_size("big.h5ad", 3 * 2**19)


def test_the_streamlit_profiles():
    laptop = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = tomllib.loads((ROOT / ".streamlit" / "config.server.toml").read_text())
    assert laptop["server"]["address"] == "127.0.0.1"
    assert server["server"]["headless"] is True and server["server"]["enableXsrfProtection"] is True
    assert server["server"]["maxUploadSize"] > 0 and server["client"]["toolbarMode"] == "viewer"
    assert laptop["runner"]["postScriptGC"] is False and server["runner"]["postScriptGC"] is False  # 0.2-0.3 s a run

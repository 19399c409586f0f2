"""Malformed and hostile inputs: each gives a clear message, the app stays up for the next user, and the results
computed before are kept.

Every case is a real file made here. It is checked twice: ``sccore`` itself (``open_dataset`` or ``load_model``)
and the dashboard, where it is uploaded, picked from the data folder or slipped into the session, after which the
dataset that was open (the demo) must still be shown and a new session must work. The last test checks that the
cached demo analysis made before all this is still served, its files untouched.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from sccore import InputError
from sccore.io import machine_memory_bytes, open_dataset
from sccore.models import load_model
from tests.conftest import ROOT, make_counts, rendered

TIMEOUT = 240
DEMO_CELLS = "700"
pytestmark = pytest.mark.filterwarnings("ignore:.* names are not unique")


@dataclass(frozen=True)
class Folders:
    """The app's folders for this module, and one outside them."""

    data: Path
    models: Path
    uploads: Path
    cache: Path
    outside: Path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Point the app at this module's folders (the cache is the page tests' shared one)."""
    base = tmp_path_factory.mktemp("hostile")
    found = Folders(data=base / "data", models=base / "models", uploads=base / "uploads",
                    cache=tmp_path_factory.getbasetemp() / "app-cache", outside=base / "outside")
    for folder in (found.data, found.models, found.outside):
        folder.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCCORE_DATA_DIRS", str(found.data))
        patch.setenv("SCCORE_MODEL_DIR", str(found.models))
        patch.setenv("SCCORE_UPLOAD_DIR", str(found.uploads))
        patch.setenv("SCCORE_CACHE_DIR", str(found.cache))
        patch.setenv("SCCORE_SETTINGS", os.devnull)  # defaults only: a developer's own sccore.toml does not apply
        yield found


def cache_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, modification time); not the cache's last-use stamps,
    which each use of an entry renews."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file() and path.name != ".used"}


@pytest.fixture(scope="module")
def computed_before(folders):
    """The demo's analysis (PCA, neighbours, UMAP), computed before any hostile input; the cache's files then."""
    app = data_page().run()
    assert not app.exception and not app.error
    return cache_files(folders.cache)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)


def data_page() -> AppTest:
    """The Data & QC page on the demo, PCA only."""
    app = page("pages/data.py")
    app.session_state["encoder_model"] = ""
    return app


def write(adata: ad.AnnData, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


def small() -> ad.AnnData:
    return make_counts(60, 50)


def with_x(values) -> ad.AnnData:
    adata = small()
    return ad.AnnData(X=values, obs=adata.obs, var=adata.var)


# --- The files ------------------------------------------------------------------------------------------------------


def truncated(folder: Path) -> Path:
    good = write(small(), folder / "good.h5ad").read_bytes()
    (folder / "good.h5ad").unlink()
    (folder / "truncated.h5ad").write_bytes(good[: len(good) // 3])
    return folder / "truncated.h5ad"


def random_bytes(folder: Path) -> Path:
    (folder / "random.h5ad").write_bytes(np.random.default_rng(0).bytes(5000))
    return folder / "random.h5ad"


def csv_renamed(folder: Path) -> Path:
    (folder / "table.h5ad").write_text("gene,cell1,cell2\nCD3E,4,0\nMS4A1,0,7\n")
    return folder / "table.h5ad"


def zip_renamed(folder: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.h5ad", b"not really")
    (folder / "archive.h5ad").write_bytes(buffer.getvalue())
    return folder / "archive.h5ad"


def gzipped(folder: Path) -> Path:
    good = write(small(), folder / "plain.h5ad").read_bytes()
    (folder / "plain.h5ad").unlink()
    (folder / "compressed.h5ad").write_bytes(gzip.compress(good))
    return folder / "compressed.h5ad"


def pickled(folder: Path) -> Path:
    (folder / "pickled.h5ad").write_bytes(pickle.dumps(small(), protocol=4))
    return folder / "pickled.h5ad"


def empty_file(folder: Path) -> Path:
    (folder / "empty.h5ad").write_bytes(b"")
    return folder / "empty.h5ad"


def hdf5_not_anndata(folder: Path) -> Path:
    with h5py.File(folder / "tenx.h5ad", "w") as file:
        file.create_dataset("matrix/data", data=np.arange(10))
    return folder / "tenx.h5ad"


def huge_sparse_shape(folder: Path) -> Path:
    path = write(small(), folder / "huge-shape.h5ad")
    with h5py.File(path, "r+") as file:
        file["X"].attrs["shape"] = np.array([10**9, 10**9])
    return path


def huge_declared_array(folder: Path) -> Path:
    path = write(small(), folder / "huge-array.h5ad")
    with h5py.File(path, "r+") as file:  # 60 x 10**10 float32 (2.4 TB), chunked and never written: a few kB
        file["obsm"].create_dataset("X_huge", shape=(60, 10**10), dtype="float32", chunks=(1, 4096),
                                    compression="gzip")
    return path


def memory_bomb(folder: Path) -> Path:
    """A few-kB file whose compressed, never-written array would fill 40 % of the machine's memory once read: under
    the per-file half-of-memory limit, but over the server's budget with the copies reading makes."""
    path = write(small(), folder / "memory-bomb.h5ad")
    n_columns = int(0.4 * machine_memory_bytes() / 4 / 60)
    with h5py.File(path, "r+") as file:
        file["obsm"].create_dataset("X_bomb", shape=(60, n_columns), dtype="float32", chunks=(1, 65536),
                                    compression="gzip")
    return path


def obs_shorter_than_x(folder: Path) -> Path:
    path = write(small(), folder / "mismatched.h5ad")
    with h5py.File(path, "r+") as file:
        index = file["obs"].attrs["_index"]
        attrs = dict(file["obs"][index].attrs)
        names = file["obs"][index][:50]
        del file["obs"][index]
        file["obs"].create_dataset(index, data=names)
        file["obs"][index].attrs.update(attrs)
    return path


def external_link(folder: Path) -> Path:
    path = write(small(), folder / "linked.h5ad")
    with h5py.File(path, "r+") as file:
        file["uns"]["elsewhere"] = h5py.ExternalLink("/etc/other-users-data.h5ad", "/X")
    return path


def non_utf8_names(folder: Path) -> Path:
    path = write(small(), folder / "latin1.h5ad")
    with h5py.File(path, "r+") as file:
        index = file["var"].attrs["_index"]
        attrs = dict(file["var"][index].attrs)
        del file["var"][index]
        file["var"].create_dataset(index, data=np.array([b"G\xe9ne%d" % i for i in range(50)], dtype="S12"))
        file["var"][index].attrs.update(attrs)
    return path


def many_categories(folder: Path) -> Path:
    n_cells = 100_000
    counts = sp.random(n_cells, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    counts.data = np.ceil(counts.data * 5)
    obs = pd.DataFrame({"barcode_group": pd.Categorical([f"g{i}" for i in range(n_cells)])},
                       index=[f"c{i}" for i in range(n_cells)])
    return write(ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=["A", "B", "C", "D"])),
                 folder / "many-categories.h5ad")


def odd_names(folder: Path) -> Path:
    adata = small()
    names = list(adata.var_names)
    names[:4] = ["<script>alert('x')</script>", "**bold** [link](http://x)", "😀 gene", "x" * 5000]
    adata.var_names = names
    adata.obs_names = [f"<img src=x onerror=alert({i})>" for i in range(adata.n_obs)]
    return write(adata, folder / "odd-names.h5ad")


def with_nan(folder: Path) -> Path:
    dense = small().X.toarray()
    dense[1, 1] = np.nan
    return write(with_x(dense), folder / "nan.h5ad")


def with_inf(folder: Path) -> Path:
    dense = small().X.toarray()
    dense[2, 3] = np.inf
    return write(with_x(dense), folder / "inf.h5ad")


def negative_counts(folder: Path) -> Path:
    dense = small().X.toarray()
    dense[0, :5] = -3
    return write(with_x(sp.csr_matrix(dense)), folder / "negative.h5ad")


def non_integer_counts(folder: Path) -> Path:
    return write(with_x(np.random.default_rng(0).uniform(0.1, 3, (60, 50)).astype(np.float32)),
                 folder / "fractional.h5ad")


def scaled_values(folder: Path) -> Path:
    dense = np.log1p(small().X.toarray())
    return write(with_x((dense - dense.mean(0)) / (dense.std(0) + 1e-6)), folder / "scaled.h5ad")


def text_matrix(folder: Path) -> Path:
    return write(with_x(np.full((60, 50), "3", dtype=object)), folder / "text.h5ad")


def duplicate_genes(folder: Path) -> Path:
    adata = small()
    adata.var_names = ["GENE0"] * 3 + list(adata.var_names[3:])
    return write(adata, folder / "duplicate-genes.h5ad")


def duplicate_cells(folder: Path) -> Path:
    adata = small()
    adata.obs_names = ["cell"] * adata.n_obs
    return write(adata, folder / "duplicate-cells.h5ad")


def no_cells(folder: Path) -> Path:
    return write(small()[:0].copy(), folder / "no-cells.h5ad")


def no_genes(folder: Path) -> Path:
    return write(small()[:, :0].copy(), folder / "no-genes.h5ad")


def two_cells(folder: Path) -> Path:
    return write(small()[:2].copy(), folder / "two-cells.h5ad")


def all_zero(folder: Path) -> Path:
    return write(with_x(sp.csr_matrix((60, 50), dtype=np.float32)), folder / "zeros.h5ad")


# id, maker, what the error says (None: the file opens), a note shown when it opens
FILE_CASES = [
    ("truncated-hdf5", truncated, "truncated or corrupt", None),
    ("random-bytes", random_bytes, "not an HDF5", None),
    ("csv-renamed", csv_renamed, "not an HDF5", None),
    ("zip-renamed", zip_renamed, "a ZIP archive", None),
    ("gzip-renamed", gzipped, "gzip-compressed", None),
    ("pickle-renamed", pickled, "a Python pickle", None),
    ("empty-file", empty_file, "is empty", None),
    ("hdf5-not-anndata", hdf5_not_anndata, "not AnnData", None),
    ("huge-shape-tiny-file", huge_sparse_shape, "1,000,000,000 x 1,000,000,000", None),
    ("huge-array-tiny-file", huge_declared_array, "TB of memory", None),
    ("memory-bomb-40-percent", memory_bomb, "Build a chunked atlas of it", None),
    ("obs-shorter-than-x", obs_shorter_than_x, "lists 50 cells", None),
    ("external-link", external_link, "links to other places or files", None),
    ("non-utf8-names", non_utf8_names, "not UTF-8", None),
    ("nan", with_nan, "1 NaN", None),
    ("inf", with_inf, "1 infinite", None),
    ("negative-counts", negative_counts, "5 negative", None),
    ("non-integer-counts", non_integer_counts, "not log-normalised counts", None),
    ("scaled-values", scaled_values, "look scaled", None),
    ("text-matrix", text_matrix, "not numbers", None),
    ("no-cells", no_cells, "empty \\(0 cells", None),
    ("no-genes", no_genes, "empty \\(60 cells x 0 genes", None),
    ("two-cells", two_cells, "only 2 cell", None),
    ("all-zero", all_zero, "no counts", None),
    ("100000-categories", many_categories, None, "100,000 different values"),
    ("duplicate-genes", duplicate_genes, None, "duplicate gene name"),
    ("duplicate-cells", duplicate_cells, None, "Duplicate cell names"),
    ("html-and-odd-names", odd_names, None, "Raw counts read from X"),
]


def open_upload(app: AppTest, path: Path, name: str) -> AppTest:
    """Upload ``path`` as ``name`` on the Home page and press Open."""
    app.radio(key="home_choice").set_value("Upload a .h5ad file").run()
    app.file_uploader[0].set_value((name, path.read_bytes(), "application/octet-stream")).run()
    next(button for button in app.button if button.label == "Open upload").click().run()
    return app


def open_from_data_folder(app: AppTest, label: str) -> AppTest:
    """Pick ``label`` from the data folder on the Home page and press Open."""
    app.radio(key="home_choice").set_value("A file from the data folder").run()
    app.selectbox[0].set_value(label).run()
    next(button for button in app.button if button.label == "Open file").click().run()
    return app


def assert_refused_and_up(app: AppTest, message: str) -> None:
    """The message is shown, nothing crashed, the demo is still open, and a new session works."""
    assert not app.exception, [e.value for e in app.exception]
    assert app.error and message.replace("\\", "") in rendered(app.error[0].value), [e.value for e in app.error]
    assert app.metric[0].value == DEMO_CELLS  # the dataset that was open is still open
    other = page("pages/home.py").run()
    assert not other.exception and not other.error and other.metric[0].value == DEMO_CELLS


@pytest.mark.parametrize("maker, message, note", [case[1:] for case in FILE_CASES], ids=[case[0] for case in FILE_CASES])
def test_a_hostile_upload_gives_a_clear_message_and_the_app_stays_up(folders, computed_before, tmp_path, maker,
                                                                     message, note):
    path = maker(tmp_path)
    app = open_upload(page("pages/home.py").run(), path, path.name)
    if message is None:
        opened = open_dataset(path)
        assert not app.exception and not app.error, [e.value for e in app.error]
        assert app.metric[0].value == f"{opened.n_obs:,}"
        assert any(note in info.value for info in app.info), [info.value for info in app.info]
        return
    with pytest.raises(InputError, match=message):
        open_dataset(path)
    assert_refused_and_up(app, message)
    assert not list(folders.uploads.rglob(f"*-{path.name}")), "a refused upload stays on the server's disk"


def test_an_upload_over_the_size_limit_is_refused(folders, computed_before, tmp_path, monkeypatch):
    monkeypatch.setenv("SCCORE_MAX_UPLOAD_MB", "1")
    path = tmp_path / "big.h5ad"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1_600_000))
    app = open_upload(page("pages/home.py").run(), path, path.name)
    assert_refused_and_up(app, "over this server's upload limit of 1 MB")
    assert not list(folders.uploads.rglob("*big.h5ad"))


def test_an_upload_named_with_a_path_stays_in_the_users_upload_folder(folders, computed_before, tmp_path):
    path = write(small(), tmp_path / "fine.h5ad")
    app = open_upload(page("pages/home.py").run(), path, "../../../../tmp/escaped.h5ad")
    assert not app.exception and not app.error
    stored = Path(app.session_state["source"])
    assert stored.parent == folders.uploads / "local" and stored.name.endswith("-escaped.h5ad")
    assert app.metric[0].value == "60"
    assert stored.stat().st_mode & 0o777 == 0o600 and stored.parent.stat().st_mode & 0o777 == 0o700  # private


def test_a_symlink_in_the_data_folder_that_leads_outside_is_refused(folders, computed_before):
    target = write(small(), folders.outside / "private.h5ad")
    (folders.data / "link.h5ad").symlink_to(target)
    try:
        app = open_from_data_folder(page("pages/home.py").run(), "data/link.h5ad")
        assert_refused_and_up(app, "lies outside the folders")
    finally:
        (folders.data / "link.h5ad").unlink()


def test_a_file_name_that_is_not_utf8_is_refused_with_the_fix(folders, computed_before):
    path = Path(os.fsdecode(folders.data.as_posix().encode() + b"/caf\xe9.h5ad"))
    write(small(), path)
    try:
        app = open_from_data_folder(page("pages/home.py").run(), "data/caf\\xe9.h5ad")
        assert_refused_and_up(app, "Rename the file")
    finally:
        path.unlink()


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_a_path_outside_the_folders_in_the_session_is_refused(folders, computed_before, where):
    target = write(small(), folders.outside / "secret.h5ad")
    app = page("pages/home.py")
    app.session_state["source"] = (str(folders.data / ".." / "outside" / "secret.h5ad") if where == "dotdot"
                                   else str(target))
    app.run()
    assert not app.exception and "lies outside the folders" in rendered(app.error[0].value)
    app.button[0].click().run()  # Open the demo
    assert not app.exception and not app.error and app.metric[0].value == DEMO_CELLS


# --- Checkpoints ----------------------------------------------------------------------------------------------------


def demo_model_copy(folder: Path) -> Path:
    shutil.copytree(ROOT / "assets" / "demo_model", folder)
    return folder


def mismatched_checkpoint(folder: Path) -> Path:
    model = demo_model_copy(folder)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "d_model": config["d_model"] * 2}))
    return model


def huge_config(folder: Path) -> Path:
    model = demo_model_copy(folder)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "d_model": 2**20, "d_ff": 2**22}))  # terabytes of weights
    return model


def damaged_config(folder: Path) -> Path:
    model = demo_model_copy(folder)
    (model / "config.json").write_text('{"n_layers": 3, ')
    return model


def corrupt_weights(folder: Path) -> Path:
    model = demo_model_copy(folder)
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    return model


CHECKPOINT_CASES = [
    ("mismatched-shapes", mismatched_checkpoint, "do not fit its config.json"),
    ("huge-config-small-weights", huge_config, "do not fit its config.json"),
    ("damaged-config", damaged_config, "could not be loaded"),
    ("corrupt-weights", corrupt_weights, "could not be loaded"),
]


@pytest.mark.parametrize("maker, message", [case[1:] for case in CHECKPOINT_CASES],
                         ids=[case[0] for case in CHECKPOINT_CASES])
def test_a_broken_checkpoint_gives_a_clear_message_and_pca_still_works(folders, computed_before, maker, message):
    folder = maker(folders.models / maker.__name__)
    try:
        with pytest.raises(InputError, match=message):
            load_model(folder)
        app = page("pages/explore.py")  # the first page to embed the cells (Data & QC needs only QC and PCA)
        app.session_state["encoder_model"] = str(folder)
        app.run()
        assert not app.exception and message in rendered(app.error[0].value), [e.value for e in app.error]
        next(button for button in app.button if button.label.startswith("Continue without the encoder")).click().run()
        assert not app.exception and not app.error
    finally:
        shutil.rmtree(folder)


class _TouchOnLoad:
    """Unpickling this creates a file: what a malicious pickle could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_pickles_in_an_upload_folder_are_never_loaded(folders, computed_before, tmp_path):
    checkpoint = folders.uploads / "local" / "geneformer"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "pickle-ran"
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 1}))
    for name in ("token_dictionary.pkl", "gene_median_dictionary.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(_TouchOnLoad(marker)))
    save_file({}, str(checkpoint / "model.safetensors"))
    with pytest.raises(InputError, match="never from an upload"):
        load_model(checkpoint)
    app = data_page()
    app.session_state["encoder_model"] = str(checkpoint)  # not a model folder the app offers
    app.run()
    assert not app.exception and "lies outside the folders" in rendered(app.error[0].value)
    assert not marker.exists()


def test_a_model_path_with_dotdot_is_refused(folders, computed_before):
    app = data_page()
    app.session_state["encoder_model"] = str(folders.models / ".." / "outside")
    app.run()
    assert not app.exception and "lies outside the folders" in rendered(app.error[0].value)


def test_a_model_name_with_a_path_is_refused_on_the_encoder_page(folders, computed_before):
    app = page("pages/encoder.py")
    app.session_state["encoder_model"] = ""
    app.run()
    app.text_input(key="train_name").set_value("../../escape")
    app.button[-1].click().run()  # the form's Train button
    assert not app.exception and "is not a model name" in rendered(app.error[0].value)
    assert not (folders.models.parent.parent / "escape").exists()


# --- A shared server: what one user's data or job could do to the pages and downloads -----------------------------


def test_a_job_error_with_markdown_is_shown_as_plain_text(folders, computed_before):
    """A failed job's error quotes the file's names; a link or image in them is not rendered (no tracking pixel, no
    link to click), and the page stays up."""
    from sccore.jobs import JobRecord, JobStore

    hostile = "obs has no column '![seen](http://tracker.example/p.png) [click](http://evil.example)'"
    store = JobStore(folders.cache)
    store.write(JobRecord(id="20261206-000000-abcdef", user="local", kind="umap", params={}, status="failed",
                          error=hostile))
    try:
        app = page("pages/jobs.py").run()
    finally:
        store.path("local", "20261206-000000-abcdef").unlink()
    assert not app.exception
    shown = next(error.value for error in app.error if "tracker" in error.value)
    assert "\\!\\[seen\\]\\(http\\:\\/\\/tracker" in shown and "](http" not in shown
    other = page("pages/home.py").run()
    assert not other.exception and not other.error


def test_exported_tables_never_carry_a_spreadsheet_formula(folders, computed_before, tmp_path):
    """Names a spreadsheet would run (=HYPERLINK(...), +cmd, @SUM) leave the app as text; numbers stay numbers."""
    import io as text_io

    from sccore.export import csv_bytes

    table = pd.DataFrame({"cell_type": ['=HYPERLINK("http://evil.example","B")', "+cmd|' /C calc'!A0", "B cell"],
                          "@SUM(A1)": [-1.5, 2.0, 3.0]}, index=["-cell1", "cell2", "cell3"])
    exported = pd.read_csv(text_io.BytesIO(csv_bytes(table, index=True)), index_col=0)
    assert list(exported["cell_type"]) == ['\'=HYPERLINK("http://evil.example","B")', "'+cmd|' /C calc'!A0", "B cell"]
    assert list(exported.columns) == ["cell_type", "'@SUM(A1)"] and list(exported.index) == ["'-cell1", "cell2",
                                                                                           "cell3"]
    assert exported["'@SUM(A1)"].tolist() == [-1.5, 2.0, 3.0]


def test_names_in_a_file_that_carry_markdown_are_shown_as_plain_text(folders, computed_before):
    """A shared file's column and category names (a colleague's, or a public file's) reach the pages' headings and
    notes as text: no link to click, no image that calls another server."""
    adata = small()
    hostile = "[click](http://evil.example)"
    adata.obs[hostile] = pd.Categorical(["x"] * adata.n_obs)  # one value: the Metrics page explains it
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "![p](http://tracker.example/p)", "b"))
    write(adata, folders.data / "markdown-names.h5ad")
    app = open_from_data_folder(page("pages/home.py").run(), "data/markdown-names.h5ad")
    assert not app.exception and not app.error, [e.value for e in app.error]
    metrics = page("pages/metrics.py")
    metrics.session_state["source"] = app.session_state["source"]
    metrics.session_state["encoder_model"] = ""
    metrics.run()
    metrics.selectbox(key="mt_batch").set_value(hostile).run()
    assert not metrics.exception
    shown = [element.value for kind in ("warning", "info", "caption", "markdown", "subheader")
             for element in metrics.get(kind)]
    assert any("\\[click\\]\\(http" in text for text in shown), shown
    assert not any("](http" in text for text in shown)  # no element left a link for the renderer
    other = page("pages/home.py").run()
    assert not other.exception and not other.error and other.metric[0].value == DEMO_CELLS


# id, kind, parameters a user types on the Jobs page, what the refusal says: requests that would hold the server's
# one worker for everyone, or write where the user may not
JOB_REQUESTS = [
    ("epochs-1e9", "train", {"epochs": 1e9}, "epochs must lie between"),
    ("batch-size-1e7", "train", {"batch_size": 10**7}, "batch_size must lie between"),
    ("latent-1e6", "train", {"latent_dim": 10**6}, "latent_dim must lie between"),
    ("neighbours-1e7", "umap", {"n_neighbors": 10**7}, "n_neighbors must lie between"),
    ("every-gene-screen", "screen", {"top": 10**8}, "top must lie between"),
    ("every-cell-screen", "screen", {"max_cells": 10**9}, "max_cells must lie between"),
    ("silhouette-1e9", "metrics", {"label_key": "cell_type", "batch_key": "batch", "embeddings": "X_pca",
                                   "max_silhouette_cells": 10**9}, "max_silhouette_cells must lie between"),
    ("atlas-chunks-1e12", "atlas", {"chunk_cells": 10**12}, "chunk_cells must lie between"),
    ("leiden-resolution-1e6", "cluster", {"resolution": 1e6}, "resolution must lie between"),
    ("harmony-rounds-1e9", "integrate", {"batch_key": "batch", "max_iter": 10**9}, "max_iter must lie between"),
    ("atlas-into-the-job-records", "atlas", {"out": "CACHE/jobs"}, "Leave out empty"),
    ("markers-over-the-settings", "markers", {"groupby": "cell_type", "output": "/etc/sccore/sccore.toml"},
     "Leave output empty"),
    ("model-into-another-users-folder", "train", {"out": "../bob/models/x"}, "is not a model name"),
    ("epochs-not-a-number", "train", {"epochs": float("nan")}, "epochs must lie between"),
    ("resolution-infinite", "cluster", {"resolution": float("inf")}, "resolution must lie between"),
    ("neighbours-negative", "umap", {"n_neighbors": -5}, "n_neighbors must lie between"),
]


@pytest.mark.parametrize("kind, params, message", [case[1:] for case in JOB_REQUESTS],
                         ids=[case[0] for case in JOB_REQUESTS])
def test_a_job_request_that_would_hold_the_server_or_write_elsewhere_is_refused(folders, computed_before, kind,
                                                                                 params, message):
    from sccore.jobs import JobStore, list_jobs

    write(small(), folders.data / "small.h5ad")
    before = list_jobs(JobStore(folders.cache), "local")
    app = page("pages/jobs.py").run()
    app.selectbox(key="jobs_kind").set_value(kind).run()
    typed = {key: value.replace("CACHE", str(folders.cache)) if isinstance(value, str) else value
             for key, value in params.items()}
    app.text_area(key=f"jobs_params_{kind}").set_value(json.dumps(typed)).run()
    app.button(key="jobs_submit").click().run()
    assert not app.exception and any(message in rendered(e.value) for e in app.error), [e.value for e in app.error]
    assert list_jobs(JobStore(folders.cache), "local") == before  # nothing queued
    other = page("pages/home.py").run()
    assert not other.exception and not other.error and other.metric[0].value == DEMO_CELLS


def test_a_user_with_jobs_under_way_up_to_the_limit_cannot_queue_more(folders, computed_before, monkeypatch):
    from sccore.jobs import JobRecord, JobStore

    write(small(), folders.data / "small.h5ad")
    monkeypatch.setenv("SCCORE_MAX_JOBS_PER_USER", "2")
    store = JobStore(folders.cache)
    queued = [f"20261206-00000{number}-aaaaaa" for number in range(2)]
    for job_id in queued:
        store.write(JobRecord(id=job_id, user="local", kind="umap", params={}, status="queued"))
    try:
        app = page("pages/jobs.py").run()
        app.selectbox(key="jobs_kind").set_value("umap").run()
        app.button(key="jobs_submit").click().run()
        assert not app.exception and "this server's limit per user (2)" in rendered(app.error[-1].value)
        assert sorted(record.id for record in store.list_jobs("local") if not record.done) == queued
    finally:
        for job_id in queued:
            store.path("local", job_id).unlink()


# --- Last: what was computed before is still there ------------------------------------------------------------------


def test_results_computed_before_the_hostile_inputs_are_kept_and_served(folders, computed_before):
    app = data_page().run()
    assert not app.exception and not app.error
    removed_by_default = app.dataframe[0].value["cells removed"].iloc[0]  # the outlier rule's, on the demo
    assert app.dataframe[1].value["cells_left"].iloc[-1] == 700 - removed_by_default
    after = cache_files(folders.cache)
    assert {name: after.get(name) for name in computed_before} == computed_before

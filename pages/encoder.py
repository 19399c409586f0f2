"""Encoder: choose a transformer model to embed the cells with, or train one on this dataset."""

import json
import time
from pathlib import Path

import streamlit as st

from dashboard import background, state
from dashboard.widgets import plain, show_error
from sccore import InputError
from sccore.device import describe, resolve_device
from sccore.glossary import HELP
from sccore.models import PRESETS
from sccore.plots import loss_curve
from sccore.settings import safe_file_name
from sccore.tasks import train as train_task
from sccore.tasks.train import TrainParams


def read_json(path: Path) -> dict:
    """A model folder's JSON file as a dict; empty when it is missing or damaged (loading the model says why)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


st.title("Transformer encoder")
st.caption(
    "A Geneformer-style encoder reads each cell as its genes ranked by expression and turns it into a vector "
    "(the mean of the encoder's outputs). It is compared with PCA everywhere, because simple baselines often do "
    "as well."
)
choice = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="device",
                      help="auto picks CUDA, then Apple MPS, then the CPU.")
try:
    device = resolve_device(choice)
except InputError as error:
    show_error(error)
    st.stop()
st.info(f"Computing on: **{describe(device)}**" + (" (chosen automatically)" if choice == "auto" else ""))

analysis = state.open_or_stop()
source = state.current_source()[0]
models = state.available_models()
current = analysis.params.encoder_model

st.subheader("Embed with a model")
if not models:
    st.warning(f"No model yet: train one below, or put a model folder in {state.settings().model_dir}.")
else:
    labels = list(models)
    index = next((i for i, label in enumerate(labels) if models[label] == current), 0)
    label = st.selectbox("Model", labels, index=index, key="model_choice")
    folder = Path(models[label])
    config, training = read_json(folder / "config.json"), read_json(folder / "training.json")
    st.caption(", ".join(f"{key}: {config[key]}" for key in ("n_layers", "d_model", "n_heads", "d_ff", "max_length",
                                                             "vocab_size") if key in config))
    if isinstance(training.get("history"), list):
        st.plotly_chart(loss_curve(training["history"]), width="stretch", key="model_curve")
        st.caption(HELP["loss"])
    if models[label] == current:
        st.success(f"The cells are embedded with this model ({analysis.adata.obsm['X_encoder'].shape[1]} dimensions); "
                   "see its UMAP beside PCA's on the Explore page.")
    elif st.button("Embed the cells with this model", type="primary"):
        st.session_state["encoder_model"] = models[label]
        st.rerun()
    if current and st.button("Use PCA only"):
        st.session_state["encoder_model"] = ""
        st.rerun()

st.subheader("Train a new model on this dataset")
st.caption("Masked-gene pretraining: 15 % of each cell's genes are hidden and the model learns to predict them. "
           "No labels are used. `small` trains in minutes on a laptop CPU; `v1` is Geneformer V1's size.")
with st.form("train"):
    left, middle, right = st.columns(3)
    preset_name = left.selectbox("Size", list(PRESETS), key="train_preset")
    epochs = middle.number_input("Epochs", 0.1, 200.0, 10.0, key="train_epochs")
    learning_rate = right.number_input("Learning rate", 1e-5, 1e-2, 1e-3, format="%.5f", key="train_lr")
    stem = safe_file_name(Path(source).stem) if source != state.DEMO else "demo"
    name = st.text_input("Model name", value=f"{stem}-{preset_name}", key="train_name")
    in_background = st.toggle("Run in the background", key="train_background",
                           help="Train as a job on the Dask cluster (see the Jobs page): the page stays free, and "
                                "training goes on when you leave or refresh it.")
    submitted = st.form_submit_button("Train", type="primary")
try:
    out = state.new_model_folder(name.strip()) if submitted else None
    if out is not None:  # the train task's parameters, the same in this session and in a job
        params = TrainParams(input=background.job_input(source), out=str(out), config=preset_name,
                             epochs=float(epochs), learning_rate=float(learning_rate), device=choice,
                             library_size_key=analysis.params.preprocess.library_size_key)
except InputError as error:
    show_error(error)
    out = None
if out is not None and in_background:
    if any(not record.done and record.params.get("out") == str(out.resolve())
           for record in background.source_jobs("train", source)):
        st.error(f"A background training into {out.name} is under way: wait for it, or cancel it first.")
    else:
        try:
            background.submit_job("train", source, background.job_params("train", source, params))
        except InputError as error:
            show_error(error)
    out = None  # the job trains it
if out is not None:
    bar = st.progress(0.0, text="Tokenizing cells…")
    chart = st.empty()
    started, seen = time.time(), {}

    def report(fraction: float, message: str) -> None:
        bar.progress(min(fraction, 1.0), text=message)
        log = out / "training.json"  # rewritten at each validation: redraw the curve when it changes
        if log.exists() and log.stat().st_mtime != seen.get("mtime"):
            seen["mtime"] = log.stat().st_mtime
            chart.plotly_chart(loss_curve(json.loads(log.read_text())["history"]), width="stretch")

    try:
        train_task.run(params, report)  # what the `train` job and `python -m sccore train` run
    except InputError as error:
        show_error(error)
    else:
        bar.empty()
        st.success(f"Trained in {time.time() - started:.0f} s and saved to {out}.")
        st.session_state["encoder_model"] = str(out)
        st.session_state.pop("model_choice", None)  # the selectbox then shows the new model
        st.rerun()

trainings = background.source_jobs("train", source)  # from the job records: also after a browser refresh
running = tuple(record.id for record in trainings if not record.done)
if running:
    background.follow_jobs(running, "Training", "train_job_cancel",
                      "The model appears in the Model list above when it has finished.")
elif trainings and trainings[0].status == "finished":
    st.success(f"The last background training on this dataset finished in {trainings[0].duration:.0f} s and saved "
               f"**{Path(trainings[0].result).name}** to {trainings[0].result}: choose it in the Model list above.")
elif trainings and trainings[0].status == "failed":
    st.error("The last background training on this dataset failed: " + plain(trainings[0].error))

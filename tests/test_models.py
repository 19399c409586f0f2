import numpy as np
import pandas as pd
import pytest
import torch

from sccore import InputError
from sccore.encode import embed_cells, encoder
from sccore.io import standardise
from sccore.models import EncoderConfig, MaskedGeneModel, TrainConfig, load_model, preset, train
from sccore.models.train import length_grouped_batches, mask_tokens
from tests.conftest import make_counts

TINY = EncoderConfig(vocab_size=3, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny")


def test_presets_match_the_issue():
    v1 = preset("v1", 100)
    assert (v1.n_layers, v1.d_model, v1.n_heads, v1.d_ff, v1.max_length) == (6, 256, 4, 512, 2048)
    with pytest.raises(InputError):
        preset("huge", 100)


def test_sdpa_and_eager_attention_agree():
    torch.manual_seed(0)
    config = EncoderConfig(vocab_size=50, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_length=20, dropout=0.0)
    model = MaskedGeneModel(config).eval()
    eager = MaskedGeneModel(EncoderConfig(**{**config.__dict__, "attention": "eager"})).eval()
    eager.load_state_dict(model.state_dict())
    tokens = torch.randint(3, 50, (4, 12))
    attention = torch.ones_like(tokens, dtype=torch.bool)
    attention[0, 8:] = False
    tokens[0, 8:] = 0
    a, b = model.encoder(tokens, attention), eager.encoder(tokens, attention)
    torch.testing.assert_close(a[attention], b[attention], atol=1e-5, rtol=1e-4)


def test_padding_does_not_change_a_cells_outputs():
    torch.manual_seed(0)
    model = MaskedGeneModel(EncoderConfig(vocab_size=50, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_length=20,
                                          dropout=0.0)).eval()
    tokens = torch.randint(3, 50, (1, 6))
    alone = model.encoder(tokens, torch.ones_like(tokens, dtype=torch.bool))
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = padded != 0
    torch.testing.assert_close(model.encoder(padded, mask)[:, :6], alone, atol=1e-5, rtol=1e-4)


def test_masking_hides_about_fifteen_percent_of_gene_tokens_only():
    tokens = torch.randint(3, 100, (64, 100))
    tokens[:, 90:] = 0
    attention = tokens != 0
    inputs, labels = mask_tokens(tokens, attention, 100, 0.15, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert 0.13 < chosen.float().sum() / attention.sum() < 0.17
    assert not chosen[:, 90:].any()
    assert 0.75 < (inputs[chosen] == 1).float().mean() < 0.85
    assert torch.equal(inputs[~chosen], tokens[~chosen])


def test_length_grouped_batches_cover_every_cell_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(10, 500, 1000)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    adata = standardise(make_counts(n_cells=240, n_genes=150))
    history = train(adata, folder, TINY, TrainConfig(epochs=6, batch_size=16, learning_rate=3e-3, eval_every=20))
    return adata, folder, history


def test_training_lowers_the_validation_loss_and_writes_a_model_folder(trained):
    adata, folder, history = trained
    assert history["val_loss"][-1] < history["val_loss"][0] - 0.05
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "vocab.json",
                                                   "gene_medians.json", "training.json", "trainer_state.pt"}
    loaded = load_model(folder)
    assert loaded.config.n_layers == 2 and len(loaded.vocabulary) == loaded.config.vocab_size


def test_training_resumes_from_its_checkpoint(trained, tmp_path):
    adata, folder, history = trained
    config = TrainConfig(epochs=2, batch_size=16, eval_every=5)
    full = train(adata, tmp_path / "a", TINY, config)
    import shutil

    partial_dir = tmp_path / "b"
    train(adata, partial_dir, TINY, TrainConfig(epochs=1, batch_size=16, eval_every=5))
    # pretend the 2-epoch run was interrupted after epoch 1: resuming with epochs=2 continues from that step
    resumed = train(adata, partial_dir, TINY, config)
    assert resumed["step"][-1] == full["step"][-1]
    shutil.rmtree(partial_dir)


def test_encoder_embeddings_separate_cell_types(trained):
    adata, folder, _ = trained
    encoder(adata, folder, device="cpu")
    embedding = adata.obsm["X_encoder"]
    assert embedding.shape == (240, 32) and np.all(np.isfinite(embedding))
    expressed = int((np.asarray((adata.X > 0).sum(0)).ravel() > 0).sum())  # the vocabulary: genes seen in training
    assert adata.uns["X_encoder"]["genes_matched"] == expressed
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    centroids = np.stack([embedding[labels == t].mean(0) for t in range(3)])
    nearest = np.argmin(((embedding[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels) > 0.55  # chance is about 0.33; a 6-epoch tiny model reaches ~0.7
    loaded = load_model(folder)
    for pooling in ("all-layers",):
        assert embed_cells(adata, loaded, pooling=pooling, precision="fp32").shape == (240, 32)
    fp32 = embed_cells(adata, loaded, precision="fp32")
    np.testing.assert_allclose(fp32, embed_cells(adata, loaded, precision="fp32", batch_size=7), atol=1e-4)
    with pytest.raises(InputError, match="cls"):
        embed_cells(adata, loaded, pooling="cls")
    with pytest.raises(InputError, match="Layer 9"):
        embed_cells(adata, loaded, layer=9)


def test_mismatched_weights_are_refused(trained, tmp_path):
    _, folder, _ = trained
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["d_model"] = 64
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="do not fit"):
        load_model(broken)


EXPRESSION = EncoderConfig(vocab_size=3, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny-gepc",
                           gepc_weight=1.0, gep_weight=0.1, contrastive_weight=0.1)


@pytest.fixture(scope="module")
def batch_aware(tmp_path_factory):
    """A tiny model trained with every objective and a decoder conditioned on obs['batch']."""
    folder = tmp_path_factory.mktemp("batch-aware")
    adata = standardise(make_counts(n_cells=240, n_genes=150))
    history = train(adata, folder, EXPRESSION, TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, eval_every=20),
                    batch_key="batch")
    return adata, folder, history


def test_every_objective_is_trained_and_its_losses_recorded(batch_aware):
    _, folder, history = batch_aware
    assert set(history["val_losses"]) == {"mlm", "gep", "gepc"}
    assert set(history["train_losses"]) == {"mlm", "gep", "gepc", "contrastive"}
    assert history["val_losses"]["gepc"][-1] < history["val_losses"]["gepc"][0]
    assert history["val_losses"]["gep"][-1] < history["val_losses"]["gep"][0]
    loaded = load_model(folder)
    assert loaded.config.batch_key == "batch" and loaded.config.batch_categories == ["b1", "b2"]
    assert loaded.config.has_decoder and loaded.config.gepc_weight == 1.0


def test_the_decoder_gives_expression_of_every_gene_for_known_and_unseen_batches(batch_aware):
    from sccore.encode import decode_expression, decoder_batch

    adata, folder, _ = batch_aware
    loaded = load_model(folder)
    embedding = embed_cells(adata[:20], loaded, precision="fp32")
    b1 = decode_expression(loaded, embedding, batch="b1")
    assert b1.shape == (20, len(loaded.vocabulary.genes)) and np.allclose(b1.sum(1), 1e4, rtol=1e-4)
    assert not np.allclose(b1, decode_expression(loaded, embedding, batch="b2"))
    average = decode_expression(loaded, embedding, batch="plate-9")
    both = (decode_expression(loaded, embedding, batch="b1") + decode_expression(loaded, embedding, batch="b2")) / 2
    np.testing.assert_allclose(average, both, rtol=1e-4)
    assert "average of the model's 2 training batches" in decoder_batch(loaded, "plate-9")[1]
    renamed = adata[:20].copy()
    renamed.obs["batch"] = "plate-9"
    encoder(renamed, loaded, device="cpu")
    assert renamed.uns["X_encoder"]["unseen_batches"] == ["plate-9"]


def test_a_decoder_learns_the_cell_types_expression(batch_aware):
    """The decoded expression of each type's cells is higher on that type's marker genes than on the others'."""
    from sccore.encode import decode_expression

    adata, folder, _ = batch_aware
    loaded = load_model(folder)
    decoded = decode_expression(loaded, embed_cells(adata, loaded, precision="fp32"))
    genes = pd.Index(loaded.vocabulary.genes)
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    observed = np.asarray(counts.todense())[:, adata.var_names.get_indexer(genes)]
    types = adata.obs["cell_type"].to_numpy()
    mean_by_type = lambda x: np.stack([x[types == t].mean(0) for t in np.unique(types)])
    observed_types, decoded_types = mean_by_type(observed / observed.sum(1, keepdims=True)), mean_by_type(decoded)
    contrast = lambda x: (x - x.mean(0)).ravel()
    # chance is about 0 (a decoder fed the raw pooled states, which barely differ between cells, scored 0.06);
    # 0.41 after these 4 epochs, 0.66 after 8
    assert np.corrcoef(contrast(observed_types), contrast(decoded_types))[0, 1] > 0.25


def test_batch_and_decoder_inputs_are_refused_with_the_fix(tmp_path):
    adata = standardise(make_counts(n_cells=60, n_genes=80))
    with pytest.raises(InputError, match="no column 'donor'"):
        train(adata, tmp_path / "a", EXPRESSION, TrainConfig(epochs=1), batch_key="donor")
    adata.obs["plate"] = "p1"
    with pytest.raises(InputError, match="single batch"):
        train(adata, tmp_path / "b", EXPRESSION, TrainConfig(epochs=1), batch_key="plate")
    with pytest.raises(InputError, match="gepc_weight"):
        train(adata, tmp_path / "c", TINY, TrainConfig(epochs=1), batch_key="batch")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_model_without_decoder_says_it_gives_shifts_only(trained):
    from sccore.encode import decode_expression

    _, folder, _ = trained
    with pytest.raises(InputError, match="no expression decoder"):
        decode_expression(load_model(folder), np.zeros((2, 32), dtype=np.float32))


def test_finetuning_adds_a_classifier_and_never_overwrites_a_model(batch_aware, tmp_path):
    from sccore.encode import classify
    from sccore.models import FinetuneConfig, finetune

    adata, folder, _ = batch_aware
    before = (folder / "model.safetensors").read_bytes()
    history = finetune(adata, folder, "cell_type", tmp_path / "tuned", FinetuneConfig(epochs=4, batch_size=16))
    assert (folder / "model.safetensors").read_bytes() == before
    tuned = load_model(tmp_path / "tuned")
    assert tuned.config.labels == ["type_0", "type_1", "type_2"] and tuned.config.label_key == "cell_type"
    labels, confidence = classify(adata, tuned)
    accuracy = np.mean(labels == adata.obs["cell_type"].astype(str).to_numpy())
    assert accuracy > 0.6 and np.all((confidence > 1 / 3 - 1e-6) & (confidence <= 1))  # chance is about 1/3
    assert np.mean(history["loss"][-5:]) < np.mean(history["loss"][:5])
    with pytest.raises(InputError, match="already holds a model"):
        finetune(adata, folder, "cell_type", tmp_path / "tuned")
    with pytest.raises(InputError, match="already holds a model"):
        finetune(adata, folder, "cell_type", folder)
    with pytest.raises(InputError, match="no column 'label'"):
        finetune(adata, folder, "label", tmp_path / "other")
    lonely = adata.copy()
    lonely.obs["cell_type"] = lonely.obs["cell_type"].astype(str)
    lonely.obs.iloc[0, lonely.obs.columns.get_loc("cell_type")] = "platelet"
    with pytest.raises(InputError, match="single cell .*platelet"):
        finetune(lonely, folder, "cell_type", tmp_path / "other")
    with pytest.raises(InputError, match="has no classifier"):
        classify(adata, load_model(folder))


LATENT = EncoderConfig(vocab_size=3, n_layers=2, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny-latent",
                       mlm_weight=0.0, gepc_weight=1.0, latent_dim=6)


@pytest.fixture(scope="module")
def latent_model(tmp_path_factory):
    """A tiny model whose cell embedding is a 6-dimensional latent space read by its decoder."""
    folder = tmp_path_factory.mktemp("latent")
    adata = standardise(make_counts(n_cells=240, n_genes=150))
    train(adata, folder, LATENT, TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, eval_every=20))
    return adata, load_model(folder)


def test_a_latent_model_embeds_cells_in_its_latent_space(latent_model):
    from sccore.encode import decode_expression, presence_gradients, DatasetTokenizer
    from sccore.transfer import classifier_labels

    adata, loaded = latent_model
    cells = embed_cells(adata, loaded, precision="fp32")
    assert cells.shape == (adata.n_obs, 6) and cells.std(0).min() > 0
    assert embed_cells(adata[:5], loaded, pooling="mean", precision="fp32").shape == (5, 32)
    assert decode_expression(loaded, cells[:4]).shape == (4, len(loaded.vocabulary.genes))
    tokenized = DatasetTokenizer(adata, loaded)(np.arange(2))
    estimated, _ = presence_gradients(loaded, tokenized, np.eye(6, dtype=np.float32), precision="fp32")
    np.testing.assert_allclose(estimated, cells[:2], atol=1e-4)  # the gradients start from the cell embedding
    types = adata.obs["cell_type"].to_numpy()
    centroids = np.stack([cells[types == t].mean(0) for t in np.unique(types)])
    nearest = np.unique(types)[((cells[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    assert np.mean(nearest == types) > 0.6  # three types: chance is about 1/3
    with pytest.raises(InputError, match=r"default pooling \('cell'\)"):
        classifier_labels(loaded, cells, pooling="mean", layer=-1)
    with pytest.raises(InputError, match="latent_dim"):
        EncoderConfig(vocab_size=10, latent_dim=-1)

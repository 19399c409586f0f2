"""A checkpoint in Geneformer's layout (Hugging Face BERT masked-LM folder + token and median dictionaries)."""

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sccore import InputError
from sccore.encode import encoder
from sccore.models import load_model

transformers = pytest.importorskip("transformers", reason="transformers writes the Hugging Face test checkpoint")
N_GENES = 60


@pytest.fixture(scope="module")
def geneformer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geneformer")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=N_GENES + 2, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     hidden_act="gelu")
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    token_dictionary = {"<pad>": 0, "<mask>": 1, **{f"ENSG{i:011d}": i + 2 for i in range(N_GENES)}}
    medians = {f"ENSG{i:011d}": float(m) for i, m in enumerate(np.random.default_rng(0).uniform(0.5, 5, N_GENES))}
    with open(folder / "token_dictionary.pkl", "wb") as handle:
        pickle.dump(token_dictionary, handle)
    with open(folder / "gene_median_dictionary.pkl", "wb") as handle:
        pickle.dump(medians, handle)
    return folder, model, token_dictionary


def test_hidden_states_match_hugging_face(geneformer_folder):
    folder, reference, token_dictionary = geneformer_folder
    loaded = load_model(folder)
    assert loaded.kind == "geneformer" and loaded.config.n_layers == 2
    genes = [f"ENSG{i:011d}" for i in (5, 17, 3, 42, 0, 33)]
    theirs = torch.tensor([[token_dictionary[g] for g in genes]])
    ours = torch.tensor([[loaded.vocabulary.id_index[g] for g in genes]])
    mask = torch.ones_like(theirs, dtype=torch.bool)
    with torch.no_grad():
        expected = reference.bert(input_ids=theirs, attention_mask=mask.long()).last_hidden_state
        actual = loaded.model.encoder(ours, mask)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_dataset_embeds_with_genes_matched_by_ensembl_id(geneformer_folder):
    folder, _, _ = geneformer_folder
    rng = np.random.default_rng(1)
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(40)]}, index=[f"SYMBOL{i}" for i in range(40)])
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(1.0, (30, 40)).astype(np.float32)), var=var)
    with pytest.raises(InputError, match="Ensembl IDs"):
        encoder(adata, folder, device="cpu")
    encoder(adata, folder, device="cpu", gene_id_key="gene_ids")
    assert adata.obsm["X_encoder"].shape == (30, 32)
    assert adata.uns["X_encoder"]["model_kind"] == "geneformer" and adata.uns["X_encoder"]["genes_matched"] == 40


def test_pickles_are_refused_outside_a_configured_model_folder(geneformer_folder):
    folder, _, _ = geneformer_folder
    with pytest.raises(InputError, match="never from an upload"):
        load_model(folder, allow_pickle=False)

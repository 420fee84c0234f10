"""Loaders of real screens: schemas, checksums, verified downloads, Replogle reduction.

The real files are read from ``$SVAE_LITE_DATA`` (CI: ../shared/data); downloads are
simulated with ``file://`` URLs or a failing downloader in a temporary cache (no internet).
"""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import scipy.sparse as sp
from anndata import AnnData

import svae_lite as sl
from svae_lite import datasets as D
from svae_lite.datasets import _files

DATA = Path(os.environ["SVAE_LITE_DATA"])
needs_data = pytest.mark.skipif(not (DATA / "devel.h5ad").is_file(),
                                reason=f"real data not found in {DATA} (set SVAE_LITE_DATA)")


def _is_integer(X):
    v = X.data if sp.issparse(X) else np.asarray(X)
    return bool(np.all(v == np.round(v)) and np.all(v >= 0))


# ----------------------------------------------------------------------------- registry
@needs_data
def test_registered_files_match_their_checksums():
    present = [n for n in D.REGISTRY if (DATA / n).is_file()]
    assert {"lowmoi_example_data.rda", "devel.h5ad"} <= set(present)
    for name in present:
        assert _files.file_sha256(DATA / name) == D.REGISTRY[name].sha256, name
        assert D.fetch(name, download=False) == DATA / name  # found via SVAE_LITE_DATA


@needs_data
def test_registry_agrees_with_the_mirror_readme():
    readme = DATA / "README.md"
    if not readme.is_file():
        pytest.skip("no README in the data directory")
    text = readme.read_text()
    for entry in D.REGISTRY.values():
        row = next((line for line in text.splitlines() if f"`{entry.name}`" in line and "|" in line), None)
        assert row is not None, entry.name
        assert entry.sha256 in row
        if entry.url:
            assert entry.url in row


def test_project_readme_lists_the_registry():
    text = (Path(__file__).parents[1] / "data" / "README.md").read_text()
    for entry in D.REGISTRY.values():
        assert entry.name in text and entry.sha256 in text


# ----------------------------------------------------------------------------- downloads
@pytest.fixture()
def mirror_url(monkeypatch, tmp_path):
    """Point the registry's download URL of devel.h5ad at a local copy (file://)."""
    def point(name, src):
        entry = D.REGISTRY[name]
        monkeypatch.setitem(D.REGISTRY, name, D.RegisteredFile(
            entry.name, entry.sha256, Path(src).resolve().as_uri(), entry.size, entry.description))
        return D.REGISTRY[name].url
    return point


@needs_data
def test_download_verifies_and_caches(mirror_url, tmp_path):
    cache = tmp_path / "cache"
    mirror_url("devel.h5ad", DATA / "devel.h5ad")
    got = D.fetch("devel.h5ad", data_dir=cache)
    assert got == cache / "devel.h5ad" and _files.file_sha256(got) == D.REGISTRY["devel.h5ad"].sha256
    assert sorted(p.name for p in cache.iterdir()) == ["devel.h5ad"]

    def offline(url, output_file, pooch):
        raise requests.exceptions.ConnectionError("offline")
    assert D.fetch("devel.h5ad", data_dir=cache, downloader=offline) == got  # cached: no download


def test_checksum_mismatch_leaves_no_file(mirror_url, tmp_path):
    bad = tmp_path / "not_devel.h5ad"
    bad.write_bytes(b"this is not the registered file")
    url = mirror_url("devel.h5ad", bad)
    cache = tmp_path / "cache"
    with pytest.raises(D.ChecksumError) as err:
        D.fetch("devel.h5ad", data_dir=cache)
    msg = str(err.value)
    assert "devel.h5ad" in msg and url in msg and "try again" in msg
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("how", ["missing_file_url", "connection_error"])
def test_unreachable_url_gives_clear_error_and_no_file(mirror_url, tmp_path, how):
    cache = tmp_path / "cache"
    url = mirror_url("devel.h5ad", tmp_path / "nowhere" / "devel.h5ad")
    downloader = None
    if how == "connection_error":
        def downloader(url, output_file, pooch):  # writes part of the file, then fails
            Path(output_file).write_bytes(b"partial")
            raise requests.exceptions.ConnectionError("Failed to establish a new connection")
    with pytest.raises(D.DownloadError) as err:
        D.fetch("devel.h5ad", data_dir=cache, downloader=downloader)
    msg = str(err.value)
    assert "devel.h5ad" in msg and url in msg and "by hand" in msg
    assert list(cache.iterdir()) == []


def test_corrupt_local_file_is_reported_not_replaced(tmp_path):
    path = tmp_path / "devel.h5ad"
    path.write_bytes(b"corrupt")
    with pytest.raises(D.ChecksumError, match=r"Delete it and call again") as err:
        D.fetch("devel.h5ad", data_dir=tmp_path)
    assert str(path) in str(err.value) and D.REGISTRY["devel.h5ad"].url in str(err.value)
    assert path.read_bytes() == b"corrupt"


def test_missing_files_name_the_environment_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="SVAE_LITE_DATA"):
        D.fetch("devel.h5ad", data_dir=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="no download URL"):
        D.papalexi2021(data_dir=tmp_path, source="converted")
    with pytest.raises(KeyError, match="not a registered data file"):
        D.fetch("nope.h5ad")
    with pytest.raises(ValueError, match="source="):
        D.norman2019(source="auto")


def test_data_dir_lookup_order(monkeypatch, tmp_path):
    import pooch

    monkeypatch.setenv("SVAE_LITE_DATA", str(tmp_path / "env"))
    assert D.get_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert D.get_data_dir() == tmp_path / "env"
    monkeypatch.delenv("SVAE_LITE_DATA")
    assert D.get_data_dir() == Path(pooch.os_cache("svae_lite"))


# ----------------------------------------------------------------------------- loaders
@pytest.fixture(scope="module")
def papalexi_pair(tmp_path_factory):
    """Papalexi built from the original .rda, 'downloaded' (file://) into an empty cache as a
    reader with internet would, and read from the converted file."""
    if not (DATA / "lowmoi_example_data.rda").is_file():
        pytest.skip(f"real data not found in {DATA}")
    cache = tmp_path_factory.mktemp("cache")
    entry = D.REGISTRY["lowmoi_example_data.rda"]
    mp = pytest.MonkeyPatch()
    mp.setitem(D.REGISTRY, entry.name, D.RegisteredFile(
        entry.name, entry.sha256, (DATA / entry.name).resolve().as_uri(), entry.size, entry.description))
    try:
        original = D.papalexi2021(data_dir=cache)  # no conversion there: builds from the .rda
    finally:
        mp.undo()
    assert sorted(p.name for p in cache.iterdir()) == ["lowmoi_example_data.rda"]
    return original, D.papalexi2021(source="converted")


@needs_data
def test_papalexi_original_and_converted_agree(papalexi_pair):
    original, converted = papalexi_pair
    assert original.shape == converted.shape == (20729, 299)
    assert list(original.obs_names) == list(converted.obs_names)
    assert list(original.var_names) == list(converted.var_names)
    pd.testing.assert_frame_equal(original.obs, converted.obs)
    assert (original.X != converted.X).nnz == 0


@needs_data
def test_papalexi_schema(papalexi_pair):
    adata = papalexi_pair[0]
    assert sp.issparse(adata.X) and _is_integer(adata.X)
    sizes = adata.obs["perturbation"].value_counts()
    # 26 genes targeted by the library; no cell's most abundant gRNA targets CD274
    assert len(sizes) == 26 and sizes["control"] == 2386 and "CD274" not in sizes
    targets = sizes.drop("control")
    assert targets.min() == 48 and targets.max() == 1341
    assert set(D.PAPALEXI_IFNG_PATHWAY) <= set(targets.index)
    assert set(adata.obs["replicate"]) == {"rep_1", "rep_2", "rep_3"}
    assert np.median(adata.obs["guide_frac"]) == pytest.approx(0.94, abs=0.01)
    sl.SVAEPlus.setup_anndata(adata.copy())  # accepted as raw counts with a control label


@needs_data
def test_norman_schema_and_exact_counts():
    adata = D.norman2019()
    conv = D.norman2019(source="converted")
    assert adata.n_obs == 3375 and adata.n_vars == 250 and _is_integer(adata.X)
    assert D.norman2019(drop_empty_genes=False).n_vars == 500
    labels = set(adata.obs["perturbation"].astype(str))
    singles = {p for p in labels if "+" not in p and p != "control"}
    doubles = {p for p in labels if "+" in p}
    assert len(singles) == 18 and len(doubles) == 15 and "control" in labels
    # the doubles whose two genes were also measured alone (the ones a model of singles can predict)
    predictable = sorted(d for d in doubles if set(d.split("+")) <= singles)
    assert predictable == ["KLF1+MAP2K6", "KLF1+TGFBR2", "MAP2K3+MAP2K6", "MAP2K3+SLC38A2", "MAPK1+TGFBR2"]
    pd.testing.assert_frame_equal(adata.obs, conv.obs)
    # The conversion divides each cell by its smallest value and rounds; in the two cells
    # whose smallest count is 2 that halves the counts. recover_counts is exact there.
    diff = np.unique((adata.X != conv.X).nonzero()[0])
    assert len(diff) == 2
    assert np.abs(conv.X[diff].toarray() - adata.X[diff].toarray() / 2).max() <= 0.5
    assert (adata.X[diff].data % 1 == 0).all()


@needs_data
def test_mcfaline_schema_and_paths_agree():
    adata = D.mcfaline2023()
    conv = D.mcfaline2023(source="converted")
    assert adata.shape == conv.shape and adata.n_obs == 2586 and _is_integer(adata.X)
    assert (adata.X != conv.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, conv.obs)
    tab = pd.crosstab(adata.obs["perturbation"], adata.obs["cell_type"])
    assert list(tab.columns) == ["A172", "T98G", "U87MG"] and tab.shape[0] == 10
    assert (tab > 0).all().all() and (tab.loc["control"] == 100).all()


def test_recover_counts_is_exact_and_rejects_other_data():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(40, 25)).astype(float)
    counts[:5] *= 2  # cells whose smallest count is 2
    counts[7, :] = 0  # an empty cell
    lib = counts.sum(1, keepdims=True)
    X = np.log1p(counts / np.maximum(lib, 1) * 1e4)
    np.testing.assert_array_equal(D.recover_counts(X).toarray()[5:], counts[5:])
    # up to the unknowable common factor, the doubled cells come back exactly as counts
    np.testing.assert_array_equal(D.recover_counts(X).toarray()[:5], counts[:5] / 2)
    with pytest.raises(ValueError, match="not log1p-normalized counts"):
        D.recover_counts(rng.normal(size=(4, 6)) ** 2)


def test_preprocess_keeps_counts_and_does_not_modify_input():
    adata = sl.simulate(n_latent=3, n_perturbations=6, n_cells_per_perturbation=30, n_genes=60,
                        n_heldout=0, seed=0)
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
    adata.obs.loc[adata.obs_names[adata.obs["perturbation"] == "P001"][:25], "perturbation"] = "control"
    before = adata.copy()
    out = D.preprocess(adata, n_top_genes=20, min_cells_per_perturbation=10)
    assert out.n_vars == 20 and _is_integer(out.X)
    assert "P001" not in set(out.obs["perturbation"]) and "control" in set(out.obs["perturbation"])
    assert out.uns["svae_lite_preprocess"]["perturbations_removed"] == ["P001"]
    assert adata.shape == before.shape and (adata.X != before.X).sum() == 0


# ----------------------------------------------------------------------------- Replogle
def _fake_replogle(path, seed=0, n_genes=80):
    """A small file with the schema of K562_gwps_raw_singlecell_01.h5ad: dense raw counts,
    obs['gene'] with 'non-targeting' controls, Ensembl ids as var_names, var['gene_name']."""
    rng = np.random.default_rng(seed)
    groups = ["non-targeting"] * 300
    # each strong perturbation swaps the expression of 5 abundant genes with 5 rare ones
    # (library composition unchanged): 10 responsive genes each, 30 in all
    strong = {"RPL5": (range(0, 5), range(40, 45)), "MED12": (range(10, 15), range(50, 55)),
              "EXOSC2": (range(20, 25), range(60, 65))}
    null = ["GENE_A", "GENE_B", "GENE_C", "GENE_D"]
    for p in list(strong) + null:
        groups += [p] * 60
    groups += ["TOO_FEW"] * 10
    base = np.full(n_genes, 0.002)
    base[:30] = 0.02
    base[70:] = 0.2 / (n_genes - 70)
    base /= base.sum()
    X = np.zeros((len(groups), n_genes), dtype=np.float32)
    for i, g in enumerate(groups):
        p = base.copy()
        if g in strong:
            a, b = list(strong[g][0]), list(strong[g][1])
            p[a], p[b] = base[b], base[a]
        X[i] = rng.poisson(p * rng.uniform(1500, 3000))
    order = rng.permutation(len(groups))
    X, groups = X[order], np.array(groups)[order]
    n = len(groups)
    obs = pd.DataFrame({
        "gem_group": rng.integers(1, 5, n),
        "gene": pd.Categorical(groups),
        "gene_id": [f"ENSG{hash(g) % 10**11:011d}" for g in groups],
        "transcript": "P1P2",
        "gene_transcript": [f"1_{g}_P1P2" for g in groups],
        "sgID_AB": [f"{g}_+_1.23-P1P2|{g}_+_2.23-P1P2" for g in groups],
        "mitopercent": rng.uniform(0.05, 0.15, n),
        "UMI_count": X.sum(1),
        "z_gemgroup_UMI": rng.normal(size=n),
        "core_scale_factor": rng.uniform(0.5, 1.5, n),
        "core_adjusted_UMI_count": X.sum(1),
    }, index=[f"CELL{i:05d}-{rng.integers(1, 5)}" for i in range(n)])
    var = pd.DataFrame({"gene_name": [f"G{j}" for j in range(n_genes)], "chr": "chr1",
                        "in_matrix": True, "mean": X.mean(0)},
                       index=[f"ENSG{j:011d}" for j in range(n_genes)])
    AnnData(X=X, obs=obs, var=var).write_h5ad(path)
    return strong, null


def test_replogle_reduction_finds_strong_perturbations_and_responsive_genes(tmp_path):
    path = tmp_path / "K562_gwps_raw_singlecell_01.h5ad"
    strong, null = _fake_replogle(path)
    a = D.replogle2022(path, n_genes=30, min_de_genes=5, min_cells_per_perturbation=50, chunk_size=97)
    assert set(a.obs["perturbation"].astype(str)) == set(strong) | {"control"}
    assert (a.obs["perturbation"] == "control").sum() == 300
    assert _is_integer(a.X) and sp.issparse(a.X)
    shifted = {f"G{j}" for a_, b_ in strong.values() for j in list(a_) + list(b_)}
    assert set(a.var_names) == shifted  # exactly the 30 genes the strong perturbations change
    assert a.var["n_perturbations_changing"].min() >= 1
    assert set(a.uns["svae_lite_reduction"]["changed_genes_per_perturbation"]) == set(strong)
    assert {"gem_group", "sgID_AB", "UMI_count"} <= set(a.obs.columns)
    sl.SVAE.setup_anndata(a)


@pytest.mark.slow
def test_replogle_explicit_lists_subsampling_and_hvg(tmp_path):
    path = tmp_path / "K562_essential_raw_singlecell_01.h5ad"
    _fake_replogle(path, seed=1)
    with pytest.warns(UserWarning, match="not in"):
        a = D.replogle2022(path, perturbations=["GENE_A", "RPL5", "ABSENT"], genes=["G1", "G50", "G79", "NOPE"],
                           max_cells_per_perturbation=20, max_control_cells=40)
    assert list(a.var_names) == ["G1", "G50", "G79"]
    assert a.obs["perturbation"].value_counts().to_dict() == {"control": 40, "GENE_A": 20, "RPL5": 20}
    h = D.replogle2022(path, perturbations=["RPL5", "MED12"], genes="hvg", n_genes=25)
    assert h.n_vars == 25 and _is_integer(h.X)


def test_replogle_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="figshare"):
        D.replogle2022(tmp_path / "missing.h5ad")
    bad = tmp_path / "bad.h5ad"
    AnnData(X=np.ones((4, 3), dtype=np.float32), obs=pd.DataFrame({"guide": list("abcd")}, index=list("abcd"))).write_h5ad(bad)
    with pytest.raises(KeyError, match=re.escape("obs['gene']")):
        D.replogle2022(bad)
    path = tmp_path / "r.h5ad"
    _fake_replogle(path)
    with pytest.raises(ValueError, match="No perturbation changes"):
        D.replogle2022(path, min_de_genes=1000)


def test_cap_cells():
    labels = ["control"] * 10 + ["A"] * 6 + ["B"] * 2
    adata = AnnData(np.arange(18, dtype=np.float32).reshape(18, 1),
                       obs=pd.DataFrame({"perturbation": pd.Categorical(labels)},
                                        index=[f"c{i}" for i in range(18)]))
    out = sl.datasets.cap_cells(adata, max_cells=3, max_control=4, seed=0)
    assert out.obs["perturbation"].value_counts().to_dict() == {"control": 4, "A": 3, "B": 2}
    assert list(out.X[:, 0]) == sorted(out.X[:, 0])  # original order kept
    again = sl.datasets.cap_cells(adata, 3, 4, seed=np.random.default_rng(0))
    assert list(again.obs_names) == list(out.obs_names)
    assert sl.datasets.cap_cells(adata, 0, 0, seed=0).n_obs == 18  # 0: keep all


def test_cap_cells_names_a_bad_argument():
    adata = AnnData(np.zeros((3, 1), dtype=np.float32),
                       obs=pd.DataFrame({"perturbation": pd.Categorical(["control", "A", "A"])},
                                        index=["a", "b", "c"]))
    with pytest.raises(ValueError, match="max_cells=-1"):
        sl.datasets.cap_cells(adata, -1, 0, seed=0)
    with pytest.raises(KeyError, match="'guide'"):
        sl.datasets.cap_cells(adata, 1, 1, seed=0, key="guide")

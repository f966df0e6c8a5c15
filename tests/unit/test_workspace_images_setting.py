"""MLHUB_WORKSPACE_IMAGES: the images (workspace flavors) the options form offers after the default."""

import pytest

from mlhubspawner.settings import SettingsError, load_settings


def images(value):
    return load_settings({"MLHUB_WORKSPACE_IMAGES": value}).workspace_images


def test_named_and_plain_entries():
    assert images(" minimal=mlhub-workspace:0.1.0, ml = mlhub-workspace-ml:0.1.0 ,, team/lab:2") == (
        ("minimal", "mlhub-workspace:0.1.0"),
        ("ml", "mlhub-workspace-ml:0.1.0"),
        ("team/lab:2", "team/lab:2"),
    )
    assert (
        images("GPU (CUDA 13)=registry.example.org:5000/ml/gpu@sha256:" + "a" * 64)[0][0] == "GPU (CUDA 13)"
    )


def test_unset_or_empty_offers_only_the_default():
    assert load_settings({}).workspace_images == ()
    assert images(" , ") == ()


@pytest.mark.parametrize(
    "value, named",
    [
        ("ml=", "''"),
        ("ml=team lab:1", "'team lab:1'"),
        ("ml=-rm:1", "'-rm:1'"),
        ("<b>x</b>=lab:1", "'<b>x</b>'"),
        ("a=b=lab:1", "'a=b'"),
    ],
)
def test_bad_entries_stop_the_hub_naming_them(value, named):
    with pytest.raises(SettingsError, match="MLHUB_WORKSPACE_IMAGES") as e:
        images(value)
    assert named in str(e.value)

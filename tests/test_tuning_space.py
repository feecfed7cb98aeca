"""What `tune` searches per kind (aeservice.tuning.space): the table, fixing and narrowing."""
from __future__ import annotations

import pytest

from aeservice.errors import UserError
from aeservice.models import MODELS
from aeservice.tuning import OPTION_PARAMS, search_space
from aeservice.tuning.space import parse_ranges


def test_search_space_table_and_defaults():
    assert set(MODELS) == {"pca", "ae", "sparse", "vae"}
    for kind, model in MODELS.items():  # every searched name can be fixed by an option
        assert all(any(s.name in names for names in OPTION_PARAMS.values()) for s in model.search), kind
    assert "beta" in search_space("vae", 64) and "beta" not in search_space("ae", 64)
    assert {"l1", "sparsity_weight", "sparsity_target"} <= set(search_space("sparse", 64))
    assert list(search_space("pca", 3)) == ["latent_dim"]
    # a code as wide as the features is no compression; one feature still gets a code of one
    assert search_space("ae", 3)["latent_dim"].high == 2 and search_space("ae", 1)["latent_dim"].high == 1
    assert search_space("ae", 64)["latent_dim"].high == 32
    assert "latent_dim" not in search_space("ae", 64, fixed=("latent_dim",))
    assert not {"hidden_width", "hidden_depth"} & set(search_space("ae", 64, fixed=("hidden",)))
    narrowed = search_space("vae", 64, ranges=parse_ranges(["beta=0.1,1;latent-dim=2,8"]))
    assert (narrowed["beta"].low, narrowed["beta"].high, narrowed["latent_dim"].high) == (0.1, 1.0, 8)
    with pytest.raises(UserError, match="at most 3 components"):
        search_space("pca", 3, ranges={"latent_dim": (1, 5)})

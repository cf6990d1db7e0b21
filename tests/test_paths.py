import pytest

from monosem.config import MonosemError
from monosem.paths import model_paths


def test_model_names_cannot_put_files_outside_data(data_dir):
    for name in ("../../etc", "a/../../b", "/abs/path/../x"):
        mp = model_paths(data_dir, name)
        for path in (mp.results, mp.sae(0), mp.sae(0, "../../x")):
            assert data_dir.resolve() in path.parents, path
    with pytest.raises(MonosemError, match="cannot make a folder name"):
        model_paths(data_dir, "..")

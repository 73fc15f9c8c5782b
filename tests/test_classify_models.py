"""Classifier architectures by name (`dermsynth.classify.models`): timm's models, registered non-timm builders,
and a clear error for a name neither knows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dermsynth.classify import models
from dermsynth.classify.models import create_classifier, register_model, registered_models
from dermsynth.classify.train import Recipe, build_model
from dermsynth.config import schema_defaults
from dermsynth.errors import ConfigError


def _recipe(**settings) -> Recipe:
    """The schema's HAM10000 recipe changed by `settings`."""
    return Recipe.from_section({**schema_defaults("classifiers.ham10000.recipe"), **settings})


pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")


@pytest.fixture
def tiny_net():
    """A non-timm classifier registered for the test (and unregistered after it)."""
    calls = []

    @register_model("tiny-test-net")
    def build(num_classes, pretrained, cache, seed, drop_rate=0.0):
        calls.append({"num_classes": num_classes, "pretrained": pretrained, "cache": cache, "drop_rate": drop_rate,
                      "seed": seed})
        return nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate), nn.LazyLinear(num_classes)), f"random-init(seed={seed})"
    yield calls
    models._MODELS.pop("tiny-test-net")


def test_a_registered_builder_is_used_instead_of_timm(tiny_net, tmp_path):
    model, weights = create_classifier("tiny-test-net", 5, pretrained=True, cache=tmp_path, seed=0, drop_rate=0.3)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 5) and weights == "random-init(seed=0)"
    assert tiny_net == [{"num_classes": 5, "pretrained": True, "cache": tmp_path, "drop_rate": 0.3, "seed": 0}]
    assert "tiny-test-net" in registered_models()
    model, _ = build_model("tiny-test-net", 3, _recipe(dropout=0.2, pretrained=False, seed=7))  # the classifiers' call
    assert tiny_net[-1] == {"num_classes": 3, "pretrained": False, "cache": tiny_net[-1]["cache"], "drop_rate": 0.2,
                            "seed": 7}
    with pytest.raises(ValueError, match="registered already"):
        register_model("tiny-test-net")(lambda **kwargs: None)


def test_a_timm_name_builds_with_the_requested_classes(tmp_path):
    model, weights = create_classifier("resnet10t", 7, pretrained=True, cache=tmp_path, seed=0)  # empty cache: random init
    assert weights.startswith("random-init")
    assert model.get_classifier().out_features == 7
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    again, _ = create_classifier("resnet10t", 7, pretrained=False, cache=tmp_path, seed=0)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # seeded: the same network each time


def test_an_unknown_name_is_a_clear_config_error(tiny_net):
    with pytest.raises(ConfigError, match=r"'no-such-net' is neither a timm model .* \(registered: .*tiny-test-net"):
        create_classifier("no-such-net", 2, pretrained=False, seed=0)


def test_the_seed_chooses_the_weights_and_the_global_random_state_is_left_alone(tmp_path):
    """Issue 27, kind 7: timm_model reseeded the global generator (torch.manual_seed(0)), so every model was the
    same whatever its seed and the caller's random stream restarted. Now the seed is the builder's own."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, label = create_classifier("resnet10t", 3, pretrained=False, cache=tmp_path, seed=1)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream continues as if nothing had been built
    again, _ = create_classifier("resnet10t", 3, pretrained=False, cache=tmp_path, seed=1)
    other, other_label = create_classifier("resnet10t", 3, pretrained=False, cache=tmp_path, seed=2)
    assert label == "random-init(seed=1)" and other_label == "random-init(seed=2)"
    weights = [m.state_dict()["fc.weight"] for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    a, b = (build_model("resnet10t", 3, _recipe(pretrained=False, seed=s))[0] for s in (4, 5))
    assert not torch.equal(a.state_dict()["conv1.0.weight"], b.state_dict()["conv1.0.weight"])

"""Classifier architectures by name (`dermsynth.classify.models`): timm's models, registered non-timm builders,
and a clear error for a name neither knows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dermsynth.classify import models
from dermsynth.classify.models import create_classifier, register_model, registered_models
from dermsynth.classify.train import Recipe, build_model
from dermsynth.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*:UserWarning")


@pytest.fixture
def tiny_net():
    """A non-timm classifier registered for the test (and unregistered after it)."""
    calls = []

    @register_model("tiny-test-net")
    def build(num_classes, pretrained, cache, drop_rate=0.0):
        calls.append({"num_classes": num_classes, "pretrained": pretrained, "cache": cache, "drop_rate": drop_rate})
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate), nn.LazyLinear(num_classes)), "random-init(seed=0)"
    yield calls
    models._MODELS.pop("tiny-test-net")


def test_a_registered_builder_is_used_instead_of_timm(tiny_net, tmp_path):
    model, weights = create_classifier("tiny-test-net", 5, pretrained=True, cache=tmp_path, drop_rate=0.3)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 5) and weights == "random-init(seed=0)"
    assert tiny_net == [{"num_classes": 5, "pretrained": True, "cache": tmp_path, "drop_rate": 0.3}]
    assert "tiny-test-net" in registered_models()
    model, _ = build_model("tiny-test-net", 3, Recipe(dropout=0.2, pretrained=False))  # what the classifiers call
    assert tiny_net[-1] == {"num_classes": 3, "pretrained": False, "cache": tiny_net[-1]["cache"], "drop_rate": 0.2}
    with pytest.raises(ValueError, match="registered already"):
        register_model("tiny-test-net")(lambda **kwargs: None)


def test_a_timm_name_builds_with_the_requested_classes(tmp_path):
    model, weights = create_classifier("resnet10t", 7, pretrained=True, cache=tmp_path)  # empty cache: random init
    assert weights.startswith("random-init")
    assert model.get_classifier().out_features == 7
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    again, _ = create_classifier("resnet10t", 7, pretrained=False, cache=tmp_path)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # seeded: the same network each time


def test_an_unknown_name_is_a_clear_config_error(tiny_net):
    with pytest.raises(ConfigError, match=r"'no-such-net' is neither a timm model .* \(registered: .*tiny-test-net"):
        create_classifier("no-such-net", 2)

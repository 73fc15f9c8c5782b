"""`dermsynth.devices.choose_device`: the one device rule of every verb."""

import pytest
import torch

from dermsynth.devices import DeviceError, choose_device


def test_auto_is_cuda_when_there_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device(None).type == expected and choose_device("").type == expected


def test_a_named_device_is_kept():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device(torch.device("cpu")) == torch.device("cpu")


def test_a_name_that_is_no_device_is_one_line():
    with pytest.raises(DeviceError, match="'gpu0' is not a PyTorch device"):
        choose_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_not_a_silent_cpu():
    with pytest.raises(DeviceError, match="--device cpu"):
        choose_device("cuda")


def test_a_gpu_index_beyond_the_machine_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU to count")
    with pytest.raises(DeviceError, match="GPU"):
        choose_device(f"cuda:{torch.cuda.device_count()}")

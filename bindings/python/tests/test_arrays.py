"""Inputs from torch tensors, DLPack producers and __cuda_array_interface__
objects reach the library without copies; streams are read from each kind."""
import numpy as np
import pytest

import rkv
from rkv._arrays import describe, stream_handle

H, D = 2, 8


def make():
    return rkv.Cache(max_seqs=2, num_layers=1, num_kv_heads=H, head_dim=D, budget=8,
                     buffer=4, window=2)


class DLPackOnly:
    """Exposes an array through DLPack alone, as a third-party producer would."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, stream=None):
        return self._array.__dlpack__()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_input_is_not_copied():
    k = np.arange(1 * H * 3 * D, dtype=np.float32).reshape(1, H, 3, D)
    described = describe(DLPackOnly(k))
    assert described.address == k.__array_interface__["data"][0]
    assert described.shape == k.shape and described.strides == (H * 3 * D, 3 * D, D, 1)
    with make() as cache:
        cache.append(0, [1], DLPackOnly(k), DLPackOnly(k), q=k)
        np.testing.assert_array_equal(cache.view(1, 0).k, k[0])


def test_cuda_array_interface_is_checked_against_the_cache_device():
    k = np.zeros((1, H, 3, D), np.float32)

    class FakeDeviceArray:  # claims device memory; a CPU cache must refuse it
        __cuda_array_interface__ = {"shape": k.shape, "typestr": "<f4", "version": 3,
                                    "data": (k.__array_interface__["data"][0], False),
                                    "strides": None, "stream": 7}

    described = describe(FakeDeviceArray())
    assert described.device == rkv.Device.CUDA and described.stream == 7
    assert described.strides == (H * 3 * D, 3 * D, D, 1)
    with make() as cache, pytest.raises(rkv.InvalidArgumentError, match="cuda"):
        cache.append(0, [0], FakeDeviceArray(), FakeDeviceArray())


def test_stream_handles():
    class TorchLike:
        cuda_stream = 1234

    class CupyLike:
        ptr = 99

    assert stream_handle(None) is None and stream_handle(5) == 5
    assert stream_handle(TorchLike()) == 1234 and stream_handle(CupyLike()) == 99
    with pytest.raises(rkv.InvalidArgumentError):
        stream_handle("default")


def test_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    k = torch.randn(2, H, 5, D)
    q = torch.randn(2, H, 5, D, dtype=torch.bfloat16)
    with make() as cache:
        cache.append(0, [0, 1], k, k.half(), q=q)
        view = cache.view(1, 0)
        torch.testing.assert_close(torch.from_numpy(view.k), k[1])
        # attend allocates its output like q: a torch tensor
        out = cache.attend(0, [0, 1], torch.randn(2, H, D))
        assert isinstance(out, torch.Tensor) and out.shape == (2, H, D)
    with rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=H, head_dim=D, budget=8, buffer=4,
                   window=2, dtype=torch.bfloat16) as cache:
        cache.append(0, [0], k[:1], k[:1], q=k[:1])
        bits = torch.from_numpy(cache.view(0, 0).k).view(torch.bfloat16)  # no copy
        torch.testing.assert_close(bits, k[0].bfloat16())

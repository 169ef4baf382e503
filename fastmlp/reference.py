"""The lab's engine: an MLP trained with hand-derived backpropagation, one network at a time.

Plain classes with the lab's names (Lab 4, Exercise 2). PyTorch is used only for tensor
arithmetic: no autograd, no ``nn.Module``. Everything else in fastmlp is checked against this file,
and this file is checked against torch autograd (tests/test_reference.py).

Shapes: ``x [N, n_in]``, ``W [n_in, n_out]``, ``b [n_out]``, ``z_in = x @ W + b`` and
``z_out = act(z_in)`` are ``[N, n_out]``, rows are samples. Layers are numbered ``l = 1..L``; the
network's output is ``z_out^(L)``.

Where each equation of Exercise 1 lives (derivation: docs/backprop.md):

- ``Z_in^(l) = Z_out^(l-1) W^(l) + b^(l)``, ``Z_out^(l) = act(Z_in^(l))``: ``NeuralLayer.forward``
  (``NeuralNetwork.forward`` chains the layers).
- ``dLoss/dZ_out^(L) = 2 (Z_out^(L) - Y) / (N n_out)``: ``MSELoss.get_gradient``.
- ``Delta^(L) = dLoss/dZ_out^(L) * sigmoid'(Z_in^(L))``: ``NeuralNetwork.backward``.
- ``dLoss/dW^(l) = Z_out^(l-1)^T Delta^(l)``, ``dLoss/db^(l) = sum over rows of Delta^(l)``:
  ``NeuralNetwork.backward``, stored as ``layer.linear.weight_grad`` / ``bias_grad``.
- ``Delta^(l-1) = (Delta^(l) W^(l)^T) * tanh'(Z_in^(l-1))``: ``NeuralNetwork.backward``.
- ``W^(l) -= lr dLoss/dW^(l)``, ``b^(l) -= lr dLoss/db^(l)``: ``NeuralNetwork.apply_gradients``.

``Z_out^(0)`` is the input ``x``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "Linear",
    "Sigmoid",
    "TanH",
    "MSELoss",
    "NeuralLayer",
    "NeuralNetwork",
    "train",
    "plot_decision_boundary",
]

ACTIVATIONS = ("tanh", "sigmoid")


def _shape(t: Tensor) -> list:
    return list(t.shape)


class Linear:
    """An affine map ``x @ weight + bias``; ``weight [in, out]``, ``bias [out]``.

    The weight is drawn with Glorot-uniform from the global torch RNG, exactly as in the lab: with
    the default dtype (float32), ``torch.manual_seed(s)`` followed by the same constructor calls
    gives the lab's numbers bit for bit. With ``dtype=torch.float64`` the uniform numbers are drawn
    in float64 (different numbers, same distribution).
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: Optional[torch.dtype] = None):
        self.in_features = in_features
        self.out_features = out_features
        self.weight = self._init_glorot(in_features, out_features, dtype=dtype)
        self.bias = torch.zeros(out_features, dtype=self.weight.dtype)

        # Filled by NeuralNetwork.backward, consumed by NeuralNetwork.apply_gradients.
        self.weight_grad: Optional[Tensor] = None
        self.bias_grad: Optional[Tensor] = None

    @staticmethod
    def _init_glorot(in_features: int, out_features: int, *,
                     dtype: Optional[torch.dtype] = None) -> Tensor:
        """Glorot-uniform: U(-a, a) with ``a = sqrt(6 / (in + out))``, one ``torch.rand`` call."""
        a = torch.sqrt(torch.tensor(6.0 / (in_features + out_features), dtype=dtype))
        return (2 * a) * torch.rand(in_features, out_features, dtype=dtype) - a

    @classmethod
    def from_tensors(cls, weight: Tensor, bias: Tensor) -> "Linear":
        """A Linear holding copies of ``weight [in, out]`` and ``bias [out]``; draws no random
        numbers."""
        linear = cls.__new__(cls)
        linear.in_features, linear.out_features = weight.shape
        linear.weight = weight.detach().clone()
        linear.bias = bias.detach().clone()
        linear.weight_grad = None
        linear.bias_grad = None
        return linear

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class Sigmoid:
    """``sigmoid(x) = 1 / (1 + exp(-x))``, written so that no intermediate overflows.

    The lab's ``1 / (1 + torch.exp(-x))`` computes ``exp(1000) = inf`` for ``x = -1000``; it still
    returns 0 there, but float32 overflows already at ``x < -88``. Here only ``exp(-|x|)``, which
    lies in ``(0, 1]``, is ever formed, and the limits come out as exact 0 and 1.
    """

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        e = torch.exp(-x.abs())  # in (0, 1]
        # x >= 0: 1 / (1 + exp(-x));  x < 0: exp(x) / (1 + exp(x)), the same value rearranged.
        return torch.where(x >= 0, 1.0, e) / (1 + e)

    @staticmethod
    def get_gradient(x: Tensor) -> Tensor:
        """``sigmoid'(x) = sigmoid(x) (1 - sigmoid(x))``, at the pre-activation ``x``."""
        s = Sigmoid.forward(x)
        return s * (1 - s)


class TanH:
    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.tanh(x)

    @staticmethod
    def get_gradient(x: Tensor) -> Tensor:
        """``tanh'(x) = 1 - tanh(x)^2``, at the pre-activation ``x``."""
        return 1 - torch.tanh(x) ** 2


class MSELoss:
    """Mean squared error over all ``N * n_out`` elements.

    ``get_gradient`` divides by ``y_true.numel()``, the number of averaged terms. The lab divides by
    ``len(y_true)`` (= N); the two agree only for ``n_out = 1``. With ``n_out > 1`` the lab's
    gradient is ``n_out`` times too large for the loss its ``forward`` computes.

    Both methods insist on equal shapes: a label vector ``[N]`` against predictions ``[N, 1]`` would
    otherwise broadcast to an ``[N, N]`` difference and a wrong loss (NeuralNetwork reshapes labels
    before calling these).
    """

    @staticmethod
    def _check(y_true: Tensor, y_pred: Tensor) -> None:
        if y_true.shape != y_pred.shape:
            raise ValueError(f"MSELoss: y_true has shape {_shape(y_true)} but y_pred has shape "
                             f"{_shape(y_pred)}; they must be equal (no broadcasting)")

    @staticmethod
    def forward(y_true: Tensor, y_pred: Tensor) -> Tensor:
        MSELoss._check(y_true, y_pred)
        return torch.mean((y_true - y_pred) ** 2)

    @staticmethod
    def get_gradient(y_true: Tensor, y_pred: Tensor) -> Tensor:
        """d loss / d y_pred = ``2 (y_pred - y_true) / numel``."""
        MSELoss._check(y_true, y_pred)
        return 2 * (y_pred - y_true) / y_true.numel()


class NeuralLayer:
    """A Linear followed by an activation (``'tanh'`` or ``'sigmoid'``).

    ``forward`` keeps its input and both outputs, which the backward pass needs:
    ``last_input = z_out^(l-1)``, ``last_zin = z_in^(l)``, ``last_zout = z_out^(l)``.
    ``linear`` (keyword only) puts an existing Linear in the layer instead of drawing a new one.
    """

    def __init__(self, in_features: int, out_features: int, activation: str, *,
                 dtype: Optional[torch.dtype] = None, linear: Optional[Linear] = None):
        if activation == "sigmoid":
            self.act = Sigmoid()
        elif activation == "tanh":
            self.act = TanH()
        else:
            raise ValueError(f"{activation!r} activation is unknown; expected one of {ACTIVATIONS}")
        self.activation = activation

        if linear is None:
            linear = Linear(in_features, out_features, dtype=dtype)
        elif (linear.in_features, linear.out_features) != (in_features, out_features):
            raise ValueError(f"linear maps {linear.in_features} -> {linear.out_features}, "
                             f"layer expects {in_features} -> {out_features}")
        self.linear = linear

        self.last_input: Optional[Tensor] = None
        self.last_zin: Optional[Tensor] = None
        self.last_zout: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        self.last_input = x
        self.last_zin = self.linear.forward(x)
        self.last_zout = self.act.forward(self.last_zin)
        return self.last_zout

    def get_weight(self) -> Tensor:
        """The weight matrix ``[in, out]`` of the linear map."""
        return self.linear.weight

    def get_bias(self) -> Tensor:
        """The bias vector ``[out]`` of the linear map."""
        return self.linear.bias

    def set_weight_gradient(self, grad: Tensor) -> None:
        self.linear.weight_grad = grad

    def set_bias_gradient(self, grad: Tensor) -> None:
        self.linear.bias_grad = grad


class NeuralNetwork:
    """An MLP: tanh on every hidden layer, sigmoid on the output, MSE loss.

    ``NeuralNetwork(2, 1, [5, 3])`` is the lab's ``2 -> 5 tanh -> 3 tanh -> 1 sigmoid``;
    ``hidden_sizes=[]`` gives a single sigmoid layer ``n_in -> n_out``.

    Inputs ``x [N, input_size]`` are cast to the network's dtype. Labels ``y [N, output_size]`` are
    cast likewise; with ``output_size == 1`` a label vector ``y [N]`` (the lab's
    ``torch.tensor([1, 0, 0, 0, 0])``) is read as ``[N, 1]``.
    """

    def __init__(self, input_size: int, output_size: int, hidden_sizes: Sequence[int], *,
                 dtype: Optional[torch.dtype] = None):
        sizes = [input_size, *hidden_sizes, output_size]
        for n in sizes:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"layer sizes must be positive ints, got {sizes}")
        # One Linear per layer, in order, so the global RNG is drawn from as in the lab.
        linears = [Linear(n_in, n_out, dtype=dtype) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
        self._build(linears)

    @classmethod
    def from_parameters(cls, weights: Sequence[Tensor],
                        biases: Sequence[Tensor]) -> "NeuralNetwork":
        """A network holding copies of ``weights[l] [n_in, n_out]`` and ``biases[l] [n_out]``.

        Sizes and dtype come from the tensors; the global RNG is not touched.
        """
        if len(weights) != len(biases) or len(weights) == 0:
            raise ValueError(f"need one bias per weight and at least one layer, got "
                             f"{len(weights)} weights and {len(biases)} biases")
        dtype = weights[0].dtype
        for l, (w, b) in enumerate(zip(weights, biases)):
            if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[1] or 0 in w.shape:
                raise ValueError(f"layer {l}: weight {_shape(w)} and bias {_shape(b)} do not form "
                                 f"a layer (need weight [n_in, n_out], bias [n_out], sizes >= 1)")
            if l > 0 and w.shape[0] != weights[l - 1].shape[1]:
                raise ValueError(f"layer {l}: weight {_shape(w)} takes {w.shape[0]} inputs but "
                                 f"layer {l - 1} has {weights[l - 1].shape[1]} outputs")
            if not w.is_floating_point() or w.dtype != dtype or b.dtype != dtype:
                raise ValueError(f"layer {l}: weight {w.dtype} and bias {b.dtype} must both have "
                                 f"the floating dtype of layer 0's weight ({dtype})")
        net = cls.__new__(cls)
        net._build([Linear.from_tensors(w, b) for w, b in zip(weights, biases)])
        return net

    def _build(self, linears: List[Linear]) -> None:
        self.input_size = linears[0].in_features
        self.output_size = linears[-1].out_features
        self.hidden_sizes = [linear.out_features for linear in linears[:-1]]
        self.layers: List[NeuralLayer] = []
        for i, linear in enumerate(linears):
            activation = "sigmoid" if i == len(linears) - 1 else "tanh"
            self.layers.append(NeuralLayer(linear.in_features, linear.out_features, activation,
                                           linear=linear))
        self.loss = MSELoss()

    @property
    def sizes(self) -> List[int]:
        """``[n_in, h1, ..., n_out]``."""
        return [self.input_size, *self.hidden_sizes, self.output_size]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].get_weight().dtype

    def __repr__(self) -> str:
        parts = [str(self.input_size)] + [f"{layer.linear.out_features} {layer.activation}"
                                          for layer in self.layers]
        return f"NeuralNetwork({' -> '.join(parts)})"

    def _check_input(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must have shape [N, {self.input_size}], got {_shape(x)}")
        return x.to(self.dtype)

    def _check_labels(self, y: Tensor, y_pred: Tensor) -> Tensor:
        y = y.to(y_pred.dtype)
        if y.ndim == 1 and self.output_size == 1:
            y = y.view(-1, 1)
        if y.shape != y_pred.shape:
            raise ValueError(f"y must have shape {_shape(y_pred)} (or [{y_pred.shape[0]}] when "
                             f"output_size is 1) to match x, got {_shape(y)}")
        return y

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``[N, output_size]``; every layer keeps its input and outputs."""
        z = self._check_input(x)
        for layer in self.layers:
            z = layer.forward(z)
        return z

    def get_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The MSE of the predictions for ``x`` against ``y`` (a 0-d tensor)."""
        y_pred = self.forward(x)
        return self.loss.forward(self._check_labels(y, y_pred), y_pred)

    def backward(self, x: Tensor, y: Tensor) -> Tensor:
        """Set ``weight_grad`` / ``bias_grad`` of every layer by backpropagation.

        Returns the loss of the forward pass the gradients come from (the lab's version returns
        nothing; ``train`` records this value instead of running a second forward pass).
        """
        y_pred = self.forward(x)
        y = self._check_labels(y, y_pred)

        # Output layer: delta^(L) = dLoss/dz_out^(L) * sigmoid'(z_in^(L)).
        out = self.layers[-1]
        delta = self.loss.get_gradient(y, y_pred) * out.act.get_gradient(out.last_zin)

        for l in reversed(range(len(self.layers))):
            layer = self.layers[l]
            # dLoss/dW = z_out^(l-1)^T delta^(l) (sums the per-sample outer products);
            # dLoss/db = delta^(l) summed over samples.
            layer.set_weight_gradient(layer.last_input.T @ delta)
            layer.set_bias_gradient(delta.sum(dim=0))
            if l > 0:
                # delta^(l-1) = (delta^(l) W^(l)^T) * act'(z_in^(l-1)); no delta for the input.
                below = self.layers[l - 1]
                delta = (delta @ layer.get_weight().T) * below.act.get_gradient(below.last_zin)

        # Check if gradients have the right size (kept from the lab).
        for i, layer in enumerate(self.layers):
            if layer.linear.weight_grad.shape != layer.linear.weight.shape \
                    or layer.linear.bias_grad.shape != layer.linear.bias.shape:
                raise ValueError("Gradients in layer with index {} have a wrong shape.".format(i))

        return self.loss.forward(y, y_pred)

    def apply_gradients(self, learning_rate: float) -> None:
        """One gradient-descent step, in place: ``W -= lr * weight_grad``, ``b -= lr * bias_grad``.
        """
        for i, layer in enumerate(self.layers):
            linear = layer.linear
            if linear.weight_grad is None or linear.bias_grad is None:
                raise RuntimeError(f"layer {i} has no gradient; call backward(x, y) first")
            linear.weight -= learning_rate * linear.weight_grad
            linear.bias -= learning_rate * linear.bias_grad


def train(x: Tensor, y: Tensor, net: NeuralNetwork, epochs: int, lr: float
          ) -> Tuple[NeuralNetwork, Tensor]:
    """Full-batch gradient descent for ``epochs`` steps of size ``lr``; ``net`` is updated in place.

    Returns ``(net, losses)`` with ``losses [epochs]``: ``losses[e]`` is the loss before update
    ``e``, from the same forward pass that gives update ``e`` its gradient (one forward per epoch).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    losses = torch.empty(epochs, dtype=net.dtype)
    for epoch in range(epochs):
        losses[epoch] = net.backward(x, y)
        net.apply_gradients(lr)
    return net, losses


def plot_decision_boundary(x: Tensor, y: Tensor, net: NeuralNetwork, ax=None, *,
                           lim: float = 2.0, steps: int = 50, cmap: str = "jet"):
    """Filled contours of the network's output over ``[-lim, lim]^2``, with the data on top.

    Needs ``net.input_size == 2``; with several outputs the first one is drawn. Draws on ``ax`` (a
    new figure when None) and returns the Figure. ``plt.show()`` is called only when matplotlib is
    in interactive mode, so scripts and tests (Agg backend) do not block or warn.
    """
    import matplotlib.pyplot as plt

    if net.input_size != 2:
        raise ValueError(f"plot_decision_boundary needs a network with 2 inputs, got {net!r}")
    if ax is None:
        _, ax = plt.subplots()

    grid_range = torch.linspace(-lim, lim, steps, dtype=net.dtype)
    # indexing='ij' (the default the lab relied on, which torch warns about): grid_x varies along
    # rows. contourf only needs grid_x, grid_y and the predictions to share one layout.
    grid_x, grid_y = torch.meshgrid(grid_range, grid_range, indexing="ij")
    grid_data = torch.stack([grid_x.flatten(), grid_y.flatten()]).T
    predictions = net.forward(grid_data)[:, 0]

    ax.contourf(grid_x.numpy(), grid_y.numpy(), predictions.view(grid_x.shape).numpy())
    x, y = x.detach().cpu(), y.detach().cpu()
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), c=y.reshape(-1).numpy(), cmap=cmap)
    if plt.isinteractive():
        plt.show()
    return ax.figure

"""lenet5: LeNet-5 (LeCun, Bottou, Bengio, Haffner, 1998) brought back to life on MNIST."""

__version__ = "0.1.0"

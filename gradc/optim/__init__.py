"""torch.optim: optimizers with PyTorch's update formulas, and lr_scheduler."""

from gradc.optim import lr_scheduler  # noqa: F401
from gradc.optim.adadelta import Adadelta
from gradc.optim.adagrad import Adagrad
from gradc.optim.adam import Adam, AdamW
from gradc.optim.adamax import Adamax
from gradc.optim.nadam import NAdam
from gradc.optim.optimizer import Optimizer
from gradc.optim.radam import RAdam
from gradc.optim.rmsprop import RMSprop
from gradc.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam",
           "lr_scheduler"]

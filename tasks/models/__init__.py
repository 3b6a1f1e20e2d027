"""Models in muP and standard parameterization, with layer names that carry their muP roles."""

from tasks.models.autoencoder import AutoencoderMLP
from tasks.models.conv import ConvNet
from tasks.models.layers import ACTIVATIONS, Readout, assign_roles, fan_in, fan_in_normal
from tasks.models.lstm import LSTMLM
from tasks.models.mlp import MLP
from tasks.models.transformer import TransformerLM

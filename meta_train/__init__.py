"""Meta-training of learned optimizers: truncated unrolls, PES / ES / truncated backprop, the outer loop."""

"""rollfit.model: the network and the losses it is trained with."""

"""The PyTorch side: the original coursework's U-Net, its training, weight conversion and the
TensorFlow-vs-PyTorch comparisons. Empty on purpose: PyTorch is imported only where it is used."""

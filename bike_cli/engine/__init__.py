"""The machinery every stage runs on: processes, devices, precision, the training loop, run folders."""

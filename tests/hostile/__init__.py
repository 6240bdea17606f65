"""The hostile-input matrix: bad images, annotations, configs, signals, disks, DDP failures and CLI inputs.

Each case asserts the exit code (or the exception type, in-process), that the message is a few lines at most and
names the file or key, that no partial or temporary file is left, and that nothing written before is lost.
"""

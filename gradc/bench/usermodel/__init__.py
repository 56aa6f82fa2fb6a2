"""`gradc bench --model FILE.py:NAME` and `gradc check`: a user's own PyTorch model file on torch and gradc.

* `loader`: load the file twice, once with PyTorch and once with gradc standing in for `torch` inside that
  file only (the rest of the process, PyTorch included, is untouched);
* `coverage`: which torch names the file uses that gradc lacks, with file:line (`gradc check`);
* `spec`: the command line's batch, loss and optimizer specs, built for either framework;
* `engines`: one training step per engine (torch eager, torch.compile, gradc eager, compile_step, interpreter);
* `run`: the cross-check of loss and gradients, timing in one child process per engine, the report.
"""

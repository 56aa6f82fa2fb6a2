"""torch.backends: the probes scripts use to pick a device (none but the CPU exists here)."""

from gradc.device import _Unavailable

mps = _Unavailable("backends.mps")
cudnn = _Unavailable("backends.cudnn")
cudnn.enabled = False
cudnn.benchmark = False
cudnn.deterministic = False

"""torch.optim.lr_scheduler (filled in below)."""

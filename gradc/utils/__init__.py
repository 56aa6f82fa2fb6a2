"""torch.utils: data loading (gradc.utils.data)."""

"""All op-table rows: one module per area; add an area by adding its import here."""

from . import bad_inputs, layout, merged_areas, nn, pointwise, reductions, small_ints, tensor_api

AREAS = (pointwise, reductions, layout, nn, tensor_api, bad_inputs, merged_areas, small_ints)
ROWS = [r for area in AREAS for r in area.ROWS]


def names() -> list[str]:
    """The distinct PyTorch names in the table, in table order."""
    return list(dict.fromkeys(r.name for r in ROWS))

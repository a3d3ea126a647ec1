"""Package data: eight-schools data and reference draws from posteriordb (BSD-3-Clause)."""

"""Training: options, data preparation, the loop, schedules, distributed helpers, plots."""

"""Training: configuration, schedules, callbacks and the trainer."""

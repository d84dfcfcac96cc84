"""The training loop: session, optimizer and schedule, time budget, carried state, distribution,
curves and resume checks."""
